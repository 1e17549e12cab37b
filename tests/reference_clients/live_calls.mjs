// Node.js — npm i ws
import WebSocket from "ws";
const ws = new WebSocket("wss://statistics-webhook.telavox.se/calls", {
  headers: { Authorization: `Bearer ${process.env.TELAVOX_TOKEN}` },
});
ws.on("message", (buf) => {
  const evt = JSON.parse(buf.toString("utf8"));
  console.log(evt);
});
ws.on("close", (code, reason) =>
  console.log("closed", code, reason.toString())
);
