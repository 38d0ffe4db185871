// An example Node.js app, deployable with `git push production main`.
//
// cutover starts each release on a fresh internal port given as $PORT and
// puts its own proxy on the public port, so the app listens where $PORT says.
const http = require("http");
const greeting = require("greeting");

const port = Number(process.env.PORT || 8000);
const host = process.env.HOST || "127.0.0.1";

const server = http.createServer((req, res) => {
  const path = req.url.split("?")[0];
  if (path === "/health") {
    return json(res, 200, { status: "healthy" });
  }
  if (path === "/") {
    return json(res, 200, {
      message: greeting("Node.js"),
      release: process.env.CUTOVER_RELEASE || "dev",
    });
  }
  json(res, 404, { error: "not found" });
});

function json(res, status, body) {
  const text = JSON.stringify(body) + "\n";
  res.writeHead(status, {
    "Content-Type": "application/json",
    "Content-Length": Buffer.byteLength(text),
  });
  res.end(text);
}

// Stop cleanly when the release is replaced.
process.on("SIGTERM", () => server.close(() => process.exit(0)));

server.listen(port, host, () => {
  console.log(`listening on ${host}:${port}`);
});
