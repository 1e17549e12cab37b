const res = await fetch("https://statistics-api.telavox.se/graphql", {
  method: "POST",
  headers: {
    "Content-Type": "application/json",
    Authorization: `Bearer ${process.env.TELAVOX_TOKEN}`,
  },
  body: JSON.stringify({
    query: `query Calls($startDate: DateTime, $endDate: DateTime) {
      calls(filter: { startDate: $startDate, endDate: $endDate }, first: 25) {
        data { idCall callDirection answered }
        totalCount cursor hasNextPage
      }
    }`,
    variables: {
      startDate: "2025-10-01T00:00:00Z",
      endDate: "2025-10-06T23:59:59Z",
    },
  }),
});
const { data } = await res.json();
console.log(data.calls);
