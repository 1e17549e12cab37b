# Python — pip install websocket-client
import json, os, websocket
def on_message(ws, msg):
    print(json.loads(msg))
ws = websocket.WebSocketApp(
    "wss://statistics-webhook.telavox.se/calls",
    header={"Authorization": f"Bearer {os.environ['TELAVOX_TOKEN']}"},
    on_message=on_message,
)
ws.run_forever()
