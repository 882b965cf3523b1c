// mgmtClient.js — the chapter's client, unchanged except for the Authorization header.
// MGMT_TOKEN comes from `python manage.py create_api_token USERNAME`.
const MGMT_TOKEN = globalThis.MGMT_TOKEN;

async function scaleService(name, count) {
  return fetch('/mgmt/scale', {
    method: 'POST',
    body: JSON.stringify({ service: name, instances: count }),
    headers: { 'Content-Type': 'application/json', 'Authorization': `Bearer ${MGMT_TOKEN}` }
  });
}

async function runWorkflow(flowId, payload) {
  return fetch('/mgmt/workflows', {
    method: 'POST',
    body: JSON.stringify({ flowId, data: payload }),
    headers: { 'Content-Type': 'application/json', 'Authorization': `Bearer ${MGMT_TOKEN}` }
  }).then(r => r.json());
}
