# Python — pip install requests
import os, requests
res = requests.post(
    "https://statistics-api.telavox.se/graphql",
    headers={
        "Content-Type": "application/json",
        "Authorization": f"Bearer {os.environ['TELAVOX_TOKEN']}",
    },
    json={
        "query": "query($s:DateTime,$e:DateTime){ calls(filter:{startDate:$s,endDate:$e}, first:1){ totalCount } }",
        "variables": {"s": "2025-10-01T00:00:00Z", "e":
            "2025-10-01T01:00:00Z"},
    },
)
print(res.json())
