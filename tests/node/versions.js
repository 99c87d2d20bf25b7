// node-soap (the npm package `soap`) against each API version, as a Node.js user writes it:
// createClientAsync on the WSDL URL, then `client.OperationAsync({named arguments})`.
// Environment: EXTILITY_WSDL (version 1, /?wsdl), EXTILITY_WSDL_CURRENT (/v2/?wsdl),
// ALICE_EMAIL, ALICE_PASSWORD. Prints "all done"; exits non-zero on the first failure.
const soap = require('soap');

function check(condition, what) {
  if (!condition) {
    console.error(`FAILED: ${what}`);
    process.exit(1);
  }
  console.log(`ok: ${what}`);
}

// node-soap keeps each element's xsi:type: a value comes as {attributes, $value}, a record
// with its attributes beside its fields. Users unwrap them, as this does (recursively).
function plain(value) {
  if (Array.isArray(value)) return value.map(plain);
  if (value === null || typeof value !== 'object') return value;
  if ('$value' in value) return value.$value;
  const out = {};
  for (const [k, v] of Object.entries(value)) {
    if (k !== 'attributes') out[k] = plain(v);
  }
  return out;
}

// Calls `name` with `args` and returns the plain result.
async function call(client, name, args) {
  const [result] = await client[`${name}Async`](args);
  return plain(result);
}

// rpc/encoded arrays come back as {item: [...]} or, for one item, {item: {...}}.
function items(array) {
  if (array == null || array.item == null) return [];
  return Array.isArray(array.item) ? array.item : [array.item];
}

async function client(wsdl) {
  const c = await soap.createClientAsync(wsdl);
  c.setSecurity(new soap.BasicAuthSecurity(process.env.ALICE_EMAIL, process.env.ALICE_PASSWORD));
  return c;
}

async function main() {
  const v1 = await client(process.env.EXTILITY_WSDL);
  // node-soap takes null, not {}, for an rpc operation without parts (its assertion
  // "invalid message definition for rpc style binding" otherwise).
  const listed = await call(v1, 'ListVDCs', null);
  const vdcs = items(listed.vdcs);
  check(vdcs.length === 1 && vdcs[0].vdc_name === 'Default VDC', 'version 1: ListVDCs()');
  const vdc = vdcs[0].vdc_id;
  const created = await call(v1, 'CreateServer', {
    vdc_id: vdc, vlan_id: -1, server_name: 'node server', image_id: 66,
    server_productoffer_id: 18, disk_productoffer_ids: { item: [29] },
  });
  const server = created.server;
  check(server.server_name === 'node server' && items(server.disks).length === 1,
    'version 1: CreateServer with the first release\'s arguments');
  // (node-soap drops nil elements: the newer fields that are never nil tell.)
  check('disks' in server && !('port_forwards' in server) && !('ssh_key_ids' in server),
    'version 1: no newer fields');
  try {
    await call(v1, 'GetDisk', { disk_id: 999999 });
    check(false, 'version 1: a fault');
  } catch (err) {
    check(/NOT_FOUND/.test(err.body || String(err)), 'version 1: a fault names its error code');
  }

  const current = await client(process.env.EXTILITY_WSDL_CURRENT);
  const second = await call(current, 'CreateVDC', { vdc_name: 'node vdc' });
  const page = await call(current, 'ListVDCs', { page_size: 1, after_id: vdc });
  check(items(page.vdcs).map((v) => v.vdc_id).join() === String(second.vdc.vdc_id),
    'current version: ListVDCs(page_size, after_id)');
  const all = await call(v1, 'ListVDCs', null);
  check(items(all.vdcs).length === 2, 'version 1: ListVDCs() lists every VDC');
  const got = await call(current, 'GetServer', { server_id: server.server_id });
  check('port_forwards' in got.server && 'ssh_key_ids' in got.server,
    'current version: GetServer has the newer fields');
  const deleted = await call(current, 'DeleteVDC', { vdc_id: second.vdc.vdc_id });
  check(Number(deleted.result) === 1, 'current version: DeleteVDC');
  console.log('all done');
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
