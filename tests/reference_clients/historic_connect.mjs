// Node.js — native fetch (Node 18+)
const res = await fetch("https://statistics-api.telavox.se/graphql", {
  method: "POST",
  headers: {
    "Content-Type": "application/json",
    Authorization: `Bearer ${process.env.TELAVOX_TOKEN}`,
  },
  body: JSON.stringify({
    query: `query($s:DateTime,$e:DateTime){
calls(filter:{startDate:$s,endDate:$e}, first:1){ totalCount } }`,
    variables: { s: "2025-10-01T00:00:00Z", e: "2025-10-01T01:00:00Z" },
  }),
});
const { data, errors } = await res.json();
if (errors) console.error(errors);
console.log(data);
