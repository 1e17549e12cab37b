import os, requests
QUERY = """query Calls($startDate: DateTime, $endDate: DateTime) {
  calls(filter: { startDate: $startDate, endDate: $endDate }, first: 25) {
    data { idCall callDirection answered }
    totalCount cursor hasNextPage
  }
}"""
res = requests.post(
    "https://statistics-api.telavox.se/graphql",
    headers={
        "Content-Type": "application/json",
        "Authorization": f"Bearer {os.environ['TELAVOX_TOKEN']}",
    },
    json={
        "query": QUERY,
        "variables": {
            "startDate": "2025-10-01T00:00:00Z",
            "endDate": "2025-10-06T23:59:59Z",
        },
    },
)
print(res.json()["data"]["calls"])
