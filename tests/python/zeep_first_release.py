"""A zeep script as a user wrote it for the first release, run unchanged against version 1
(EXTILITY_WSDL, the server's /?wsdl), then the newer arguments against the current version
(EXTILITY_WSDL_CURRENT, /v2/?wsdl).

Version 1 calls pass exactly the first release's arguments: `ListVDCs()` with none, CreateServer
with six. zeep checks every response against the WSDL (strict by default), so a record carrying
a field version 1 does not name would fail here. Environment: EXTILITY_WSDL,
EXTILITY_WSDL_CURRENT, ALICE_EMAIL, ALICE_PASSWORD. Exits non-zero on the first failure.
"""
import os
import sys

import zeep
from requests import Session
from zeep import xsd
from zeep.helpers import serialize_object
from zeep.transports import Transport


def check(condition, what):
    if not condition:
        print(f"FAILED: {what}", file=sys.stderr)
        sys.exit(1)
    print(f"ok: {what}")


session = Session()
session.auth = (os.environ["ALICE_EMAIL"], os.environ["ALICE_PASSWORD"])
client = zeep.Client(os.environ["EXTILITY_WSDL"], transport=Transport(session=session))

# The first release's script, as its users wrote it.
vdcs = client.service.ListVDCs()
check(vdcs[0].vdc_name == "Default VDC", "ListVDCs() with no arguments")
vdc = vdcs[0].vdc_id
vlan = client.service.CreateVLAN(vdc, "first release vlan")
check([v.vlan_id for v in client.service.ListVLANs(vdc)] == [vlan.vlan_id], "ListVLANs(vdc)")
check(list(serialize_object(vlan)) == ["vlan_id", "vlan_name", "vlan_uuid", "vdc_id"],
      "a VLAN has version 1's fields alone")
check(any(o.product_offer_id == 18 for o in client.service.ListProductOffers("server")),
      "ListProductOffers(type)")
check(any(i.image_id == 66 for i in client.service.ListImages()), "ListImages()")
server = client.service.CreateServer(vdc, vlan.vlan_id, "first release server", 66, 18,
                                     {"item": [29]})
check(server.server_name == "first release server" and len(server.disks) == 1,
      "CreateServer with the first release's six arguments")
fields = list(serialize_object(client.service.GetServer(server.server_id)))
check(fields == ["server_id", "server_name", "server_uuid", "status", "status_reason", "vdc_id",
                 "vlan_id", "processors", "memory", "image_id", "product_offer_id", "disks",
                 "initial_user", "initial_password", "created"],
      f"GetServer has version 1's fields, in order: {fields}")
check(len(client.service.ListServers(vdc)) == 1, "ListServers(vdc)")
check(len(client.service.ListDisks(vdc)) == 1, "ListDisks(vdc)")
job = client.service.StartServer(server.server_id)
check(client.service.WaitForJob(job, 60).status == 1, "StartServer, WaitForJob")
check(len(client.service.ListJobs()) == 1, "ListJobs()")
check(client.service.WaitForJob(client.service.StopServer(server.server_id, 2), 60).status == 1,
      "StopServer")
try:
    client.service.GetDisk(999999)
    check(False, "a missing disk is a fault")
except zeep.exceptions.Fault as fault:
    check("NOT_FOUND" in zeep.helpers.etree.tostring(fault.detail).decode(),
          "faults carry the ExtilityException detail")
check(not hasattr(client.service, "DeleteVDC") or "DeleteVDC" not in
      client.wsdl.bindings[next(iter(client.wsdl.bindings))]._operations,
      "version 1 has no DeleteVDC")

# The current version: the arguments added since, by name.
current = zeep.Client(os.environ["EXTILITY_WSDL_CURRENT"], transport=Transport(session=session))
api = current.service
second = api.CreateVDC("second vdc")
page = api.ListVDCs(page_size=1, after_id=vdc)
check([v.vdc_id for v in page] == [second.vdc_id], "ListVDCs(page_size, after_id)")
check(len(client.service.ListVDCs()) == 2, "version 1 still lists them all")
KEY = ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJPq6JkZdznBikD0F5uhrPqrkPdmj7iMqIo7tz12MBpw "
       "zeep@test")
key = api.CreateSSHKey("zeep key", KEY)
keyed = api.CreateServer(vdc, -1, "keyed", 66, 18, {"item": [29]}, {"item": [key.ssh_key_id]})
check(list(keyed.ssh_key_ids) == [key.ssh_key_id] and keyed.node is None,
      "CreateServer(..., ssh_key_ids) and the newer fields")
named = api.ListServers(vdc, xsd.Nil, xsd.Nil, "KEYED")
check([s.server_id for s in named] == [keyed.server_id], "ListServers(..., name)")
check(api.DeleteVDC(second.vdc_id) == 1, "DeleteVDC")
print("all done")
