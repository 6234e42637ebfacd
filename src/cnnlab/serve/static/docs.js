// Renders /openapi.json as a plain list of operations (the server's own, offline API reference).
"use strict";

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

async function main() {
  const response = await fetch("/openapi.json");
  if (!response.ok) { // a server with an API key guards its schema too
    document.getElementById("api-title").textContent = `/openapi.json: HTTP ${response.status}; ` +
      "this server requires an API key (GET it with the header X-API-Key).";
    return;
  }
  const schema = await response.json();
  document.getElementById("api-title").textContent = `${schema.info.title} ${schema.info.version} · ${schema.info.description || ""}`;
  const docs = document.getElementById("docs");
  for (const [path, operations] of Object.entries(schema.paths)) {
    for (const [method, op] of Object.entries(operations)) {
      const card = el("section", "card op");
      const title = el("h3");
      title.append(el("span", `method ${method}`, method.toUpperCase()), el("code", "", path));
      card.append(title, el("p", "", op.summary || ""));
      for (const param of op.parameters || []) {
        card.append(el("p", "small", `query ${param.name}: ${param.description || ""}`));
      }
      const body = op.requestBody && op.requestBody.content;
      if (body) card.append(el("p", "small", `body: ${Object.keys(body).join(", ")}, field "files" (one or more images)`));
      const codes = Object.entries(op.responses || {}).map(([code, r]) => `${code} ${r.description}`);
      card.append(el("pre", "", codes.join("\n")));
      docs.append(card);
    }
  }
}

main();
