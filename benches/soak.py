#!/usr/bin/env python3
"""The soak test of issue 11; `benches/soak.sh` builds the server and runs this.

A throwaway PostgreSQL cluster, two `extility serve` nodes on it (one data dir, as nodes on
shared storage), a loopback image server, and several customers driving a mixed load over
the JSON API for SOAK_MINUTES, while a fault thread kills -9 a node and restarts it, and
restarts PostgreSQL, at random moments. Then the load stops, every job is let end, and the
invariants are checked against the database and the volume folder:

  - every job ended (none queued, waiting or running);
  - no orphan volume file and no volume row naming a missing file (kills leave orphans by
    design; the nodes sweep them every 5 s once 45 s old here, and the check waits for that);
  - no half-made disk or server (disks on a missing volume, raw files of the wrong size,
    fetched disks whose data is not the image, volumes nothing uses, servers left in a
    transitional state or without a boot disk);
  - no job run twice (each FetchDisk's result committed once: at most one disk of its name,
    the one its job names; at most one usage line of fetched bytes; a job that failed
    committed nothing; a job's end, once a client saw it, never changes).

Prints the calls made per operation, errors by code, jobs by final status, the faults
injected and how long each node took to serve again, and the invariants; exits 1 when an
invariant fails or a node does not recover.

Faults are chosen among SOAK_FAULTS (comma-separated; default kill,pg):

  - kill: kill -9 a node and start it again after 0.5-5 s;
  - pg: restart PostgreSQL (`pg_ctl restart -m` one of SOAK_PG_MODES);
  - partition: node-a runs in a network namespace of its own, joined to this one by a veth
    pair, reaching PostgreSQL (which then listens on the veth's address too) and the image
    server across it; the fault drops every packet it sends to PostgreSQL (nftables in its
    namespace) for 5-25 s, longer than the 10 s job lease, so that node-b takes its jobs over;
  - fulldisk: the nodes' data directory is a small file system of its own (a loop-mounted
    ext4 image, SOAK_DISK_MB, 2048); the fault fills it with a file for 3-10 s, then removes it;
  - osd: the volumes are in Ceph RBD (SOAK_STORAGE=rbd, implied), a throwaway cluster of one
    monitor and one BlueStore OSD (scripts/ceph-test-cluster.sh --bluestore); the fault kills
    the OSD with SIGKILL and starts it again, during fetches and clones. (Not with partition:
    a node in a namespace of its own would need forwarders to reach Ceph's loopback ports.)

Standard library only. Run as root (initdb and pg_ctl run as the `postgres` user; namespaces,
nftables and mount need root).
"""

import argparse
import collections
import gzip
import hashlib
import http.server
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import base64
import http.client

PG_BIN = os.environ.get("PG_BIN", "/usr/lib/postgresql/15/bin")
DISK_1GB = 29
SERVER_1CPU_512MB = 17
BLANK_IMAGE = 66
IMAGE_BYTES = 6 << 20
JOB_STATUS = {1: "successful", 2: "in progress", 3: "failed", 4: "cancelled", 6: "not started",
              7: "waiting"}


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def as_postgres(args, **kw):
    return subprocess.run(["runuser", "-u", "postgres", "--"] + args, check=True,
                          stdout=subprocess.DEVNULL, **kw)


# --- PostgreSQL -----------------------------------------------------------------------------

class Postgres:
    def __init__(self, work, also_listen=None):
        self.dir = os.path.join(work, "pg")
        os.makedirs(self.dir)
        shutil.chown(self.dir, "postgres", "postgres")
        os.chmod(self.dir, 0o700)
        self.data = os.path.join(self.dir, "data")
        self.log = os.path.join(self.dir, "postgres.log")
        self.port = free_port()
        as_postgres([f"{PG_BIN}/initdb", "-D", self.data, "-U", "postgres", "--auth=trust",
                     "-E", "UTF8", "--no-sync"])
        listen = "127.0.0.1"
        if also_listen:
            # A node in a namespace of its own reaches it across a veth pair.
            listen += f",{also_listen}"
            with open(os.path.join(self.data, "pg_hba.conf"), "a") as hba:
                hba.write(f"host all all {also_listen}/30 trust\n")
        opts = (f"-p {self.port} -k {self.dir} -c listen_addresses={listen} "
                "-c max_connections=200")
        as_postgres([f"{PG_BIN}/pg_ctl", "-D", self.data, "-l", self.log, "-o", opts, "-w",
                     "start"])
        self.psql("CREATE DATABASE extility", db="postgres")
        self.url = f"postgres://postgres@127.0.0.1:{self.port}/extility"

    def restart(self, mode):
        as_postgres([f"{PG_BIN}/pg_ctl", "-D", self.data, "-l", self.log, "-m", mode, "-w",
                     "restart"])

    def stop(self):
        subprocess.run(["runuser", "-u", "postgres", "--", f"{PG_BIN}/pg_ctl", "-D", self.data,
                        "-m", "immediate", "-w", "stop"], stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)

    def psql(self, sql, db="extility"):
        """Rows of `sql` as lists of strings (fields split on '|')."""
        out = subprocess.run(
            [f"{PG_BIN}/psql", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres",
             "-d", db, "-X", "-q", "-A", "-t", "-F", "|", "-v", "ON_ERROR_STOP=1", "-c", sql],
            check=True, capture_output=True, text=True).stdout
        return [line.split("|") for line in out.splitlines() if line]


# --- Ceph ---------------------------------------------------------------------------------

class Ceph:
    """A throwaway Ceph cluster with its OSD on BlueStore (so that it survives a restart) and
    a pool for the nodes' volumes."""

    def __init__(self, work):
        script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "scripts",
                              "ceph-test-cluster.sh")
        self.dir = os.path.join(work, "ceph")
        self.proc = subprocess.Popen([script, self.dir, "--bluestore"], stdout=subprocess.PIPE,
                                     stderr=open(os.path.join(work, "ceph.log"), "ab"),
                                     text=True)
        line = self.proc.stdout.readline()
        if not line.startswith("ready "):
            raise SystemExit(f"the Ceph cluster did not start; see {work}/ceph.log")
        self.conf = line.split(" ", 1)[1].strip()
        self.pool = "soak"
        self.run("ceph", "osd", "pool", "create", self.pool, "8", "8")
        self.run("rbd", "pool", "init", self.pool)

    def run(self, tool, *args):
        return subprocess.run([tool, "--conf", self.conf] + list(args), check=True,
                              capture_output=True, text=True, timeout=300).stdout

    def server_args(self):
        return ["--storage", "rbd", "--rbd-pool", self.pool, "--ceph-conf", self.conf]

    def restart_osd(self):
        """Kills the OSD (-9) and starts it again (the script does, on SIGUSR1)."""
        self.proc.send_signal(signal.SIGUSR1)

    def images(self):
        return set(json.loads(self.run("rbd", "ls", "--pool", self.pool, "--format", "json")))

    def size(self, name):
        return json.loads(self.run("rbd", "info", f"{self.pool}/{name}", "--format",
                                   "json"))["size"]

    def head(self, name, n):
        export = subprocess.Popen(["rbd", "--conf", self.conf, "export", f"{self.pool}/{name}",
                                   "-"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        data = b""
        while len(data) < n:
            chunk = export.stdout.read(n - len(data))
            if not chunk:
                break
            data += chunk
        export.kill()
        export.wait()
        return data

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


class Volumes:
    """Where the nodes keep volumes: files in the data directory, or images of an RBD pool."""

    def __init__(self, data_dir, ceph):
        self.data_dir = data_dir
        self.ceph = ceph

    def names(self):
        if self.ceph:
            return {n for n in self.ceph.images() if n.startswith("extility-vol-")}
        return volume_files(self.data_dir)

    def size(self, name):
        if self.ceph:
            return self.ceph.size(name)
        return os.path.getsize(os.path.join(self.data_dir, "volumes", name))

    def head(self, name, n):
        if self.ceph:
            return self.ceph.head(name, n)
        path = os.path.join(self.data_dir, "volumes", name)
        if not os.path.exists(path):
            return None
        with open(path, "rb") as f:
            return f.read(n)

    def staged(self):
        d = os.path.join(self.data_dir, "staging")
        staged = os.listdir(d) if os.path.isdir(d) else []
        if self.ceph:
            staged += [n for n in self.ceph.images() if n.startswith("extility-stage-")]
        return staged


# --- The image server -----------------------------------------------------------------------

def make_image(seed):
    """IMAGE_BYTES of which a third is random (per 3 MiB: 1 MiB random, 2 MiB zeros)."""
    rng = random.Random(seed)
    out = bytearray()
    while len(out) < IMAGE_BYTES:
        out += rng.randbytes(1 << 20)
        out += bytes(2 << 20)
    return bytes(out[:IMAGE_BYTES])


class Images:
    """Serves `/<name>`: raw, gzip, slow (paced) gzip, and a 404 for anything else."""

    def __init__(self, host="127.0.0.1"):
        self.host = host
        self.raw = make_image(1)
        self.md5 = hashlib.md5(self.raw).hexdigest()
        self.gz = gzip.compress(self.raw, 6)
        self.files = {
            "image.raw": (self.raw, None),
            "image.raw.gz": (self.gz, None),
            # about 2 s for the compressed image: long enough to be killed under.
            "slow.raw.gz": (self.gz, (48 << 10, 0.05)),
        }
        images = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):
                entry = images.files.get(self.path.lstrip("/"))
                if entry is None:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                data, pace = entry
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.send_header("Content-Type", "application/octet-stream")
                self.end_headers()
                try:
                    if pace is None:
                        self.wfile.write(data)
                    else:
                        chunk, delay = pace
                        for i in range(0, len(data), chunk):
                            self.wfile.write(data[i:i + chunk])
                            self.wfile.flush()
                            time.sleep(delay)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer((host, 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def url(self, name):
        return f"http://{self.host}:{self.port}/{name}"


# --- The nodes ------------------------------------------------------------------------------

class Node:
    def __init__(self, name, binary, work, data_dir, db_url, extra, netns=None):
        """`netns`: (namespace, the node's address there), for a node on a host of its own."""
        self.name = name
        self.binary = binary
        self.port = free_port()
        address = netns[1] if netns else "127.0.0.1"
        self.api = f"http://{address}:{self.port}"
        self.log = open(os.path.join(work, f"serve-{name}.log"), "ab")
        self.args = (["ip", "netns", "exec", netns[0]] if netns else []) + [
            binary, "serve", "--data-dir", data_dir, "--database-url", db_url,
            "--node-id", name, "--listen", f"{address}:{self.port}",
            # No VMs, so no tenant networks: two nodes of one host would both listen on the
            # metadata port.
            "--hypervisor", "none", "--network", "user"] + extra
        self.proc = None
        self.starts = 0

    def start(self):
        env = dict(os.environ, RUST_LOG=os.environ.get("RUST_LOG", "info"))
        self.proc = subprocess.Popen(self.args, stdout=self.log, stderr=self.log, env=env)
        self.starts += 1

    def kill9(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


# --- The API client -------------------------------------------------------------------------

class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.calls = collections.Counter()
        self.ok = collections.Counter()
        self.errors = collections.Counter()          # code -> count
        self.errors_by_op = collections.Counter()    # (op, code) -> count
        self.jobs = {}                               # job id -> (customer, operation, name)
        self.seen_end = {}                           # job id -> status a client saw it end with
        self.end_changed = []                        # (job id, seen before, seen now)

    def call(self, op, code):
        with self.lock:
            self.calls[op] += 1
            if code is None:
                self.ok[op] += 1
            else:
                self.errors[code] += 1
                self.errors_by_op[(op, code)] += 1

    def job(self, job_id, customer, op, name=None):
        with self.lock:
            self.jobs[job_id] = (customer, op, name)

    def saw(self, job):
        status = job.get("status")
        if status not in (1, 3, 4):
            return
        job_id = job["job_id"]
        with self.lock:
            before = self.seen_end.setdefault(job_id, status)
            if before != status:
                self.end_changed.append((job_id, before, status))


class ApiError(Exception):
    def __init__(self, code, message=""):
        super().__init__(f"{code}: {message}")
        self.code = code


class Client:
    def __init__(self, nodes, email, password, stats):
        self.nodes = nodes
        self.auth = "Basic " + base64.b64encode(f"{email}:{password}".encode()).decode()
        self.stats = stats

    def call(self, op, args=None, node=None, timeout=60):
        node = node or random.choice(self.nodes)
        req = urllib.request.Request(
            f"{node.api}/api/v1/{op}", data=json.dumps(args or {}).encode(), method="POST",
            headers={"Content-Type": "application/json", "Authorization": self.auth})
        code = None
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return json.loads(resp.read())
        except urllib.error.HTTPError as e:
            try:
                body = json.loads(e.read())
                code = body["error"]["code"]
                message = body["error"].get("message", "")
            except Exception:
                code, message = f"HTTP_{e.code}", ""
            raise ApiError(code, message)
        except (urllib.error.URLError, ConnectionError, socket.timeout, TimeoutError,
                http.client.HTTPException) as e:
            reason = getattr(e, "reason", e)
            if isinstance(reason, ConnectionRefusedError):
                code = "connection refused"
            elif isinstance(reason, (socket.timeout, TimeoutError)):
                code = "client timeout"
            else:
                code = "connection error"
            raise ApiError(code, str(e))
        finally:
            self.stats.call(op, code)


# --- The load -------------------------------------------------------------------------------

class Customer:
    def __init__(self, index, nodes, stats, images, vdc_id, email, password):
        self.index = index
        self.client = Client(nodes, email, password, stats)
        self.stats = stats
        self.images = images
        self.vdc = vdc_id
        self.pending = []
        self.lock = threading.Lock()
        self.seq = 0

    def name(self, kind):
        with self.lock:
            self.seq += 1
            return f"{kind}-c{self.index}-{self.seq}"

    def queued(self, job_id, op, name=None):
        self.stats.job(job_id, self.index, op, name)
        with self.lock:
            self.pending.append(job_id)

    def take_pending(self):
        with self.lock:
            if not self.pending:
                return None
            return self.pending.pop(random.randrange(len(self.pending)))

    def put_back(self, job_id):
        with self.lock:
            self.pending.append(job_id)

    # One action of the load, chosen by weight.
    def act(self, rng):
        c = self.client
        action = rng.choices(
            ["fetch", "create_disk", "delete_disk", "create_server", "start", "stop",
             "destroy", "list", "wait", "get_job"],
            weights=[8, 8, 8, 6, 12, 12, 4, 20, 14, 8])[0]
        if action == "fetch":
            source = rng.choices(["image.raw", "image.raw.gz", "slow.raw.gz", "bad-md5",
                                  "missing"], weights=[3, 3, 4, 1, 1])[0]
            url = self.images.url("slow.raw.gz" if source == "bad-md5" else source)
            md5 = "0" * 32 if source == "bad-md5" else self.images.md5
            name = self.name("fetch")
            job = c.call("FetchDisk", {"url": url, "checksum": md5, "name": name,
                                       "disk_productoffer_id": DISK_1GB, "vdc_id": self.vdc,
                                       "make_image": False})
            self.queued(job["job_id"], "FetchDisk", name)
        elif action == "create_disk":
            disks = c.call("ListDisks", {"vdc_id": self.vdc})
            if len(disks) < 14:
                c.call("CreateDisk", {"vdc_id": self.vdc, "name": self.name("disk"),
                                      "disk_productoffer_id": DISK_1GB, "image_id": 0})
        elif action == "delete_disk":
            disks = [d for d in c.call("ListDisks", {"vdc_id": self.vdc})
                     if d.get("server_id") in (None, 0, -1)]
            if disks:
                c.call("DeleteDisk", {"disk_id": rng.choice(disks)["disk_id"]})
        elif action == "create_server":
            servers = c.call("ListServers", {"vdc_id": self.vdc})
            if len(servers) < 6:
                c.call("CreateServer", {"vdc_id": self.vdc, "vlan_id": -1,
                                        "server_name": self.name("server"),
                                        "image_id": BLANK_IMAGE,
                                        "server_productoffer_id": SERVER_1CPU_512MB,
                                        "disk_productoffer_ids": [DISK_1GB, DISK_1GB]})
        elif action in ("start", "stop", "destroy"):
            servers = c.call("ListServers", {"vdc_id": self.vdc})
            want = {"start": (5,), "stop": (2,), "destroy": (2, 5)}[action]
            servers = [s for s in servers if s["status"] in want]
            if servers:
                server = rng.choice(servers)["server_id"]
                if action == "start":
                    job = c.call("StartServer", {"server_id": server})
                    self.queued(job["job_id"], "StartServer")
                elif action == "stop":
                    job = c.call("StopServer", {"server_id": server, "stop_method": 2})
                    self.queued(job["job_id"], "StopServer")
                else:
                    job = c.call("DestroyServer", {"server_id": server})
                    self.queued(job["job_id"], "DestroyServer")
        elif action == "list":
            op = rng.choice(["ListDisks", "ListServers", "ListJobs", "ListImages", "ListVDCs",
                             "GetQuota"])
            args = {"vdc_id": self.vdc} if op in ("ListDisks", "ListServers") else {}
            result = c.call(op, args)
            if op == "ListJobs":
                for job in result:
                    self.stats.saw(job)
        elif action in ("wait", "get_job"):
            job_id = self.take_pending()
            if job_id is None:
                return
            try:
                if action == "wait":
                    job = c.call("WaitForJob", {"job_id": job_id, "timeout_seconds": 5})
                else:
                    job = c.call("GetJob", {"job_id": job_id})
            except ApiError:
                self.put_back(job_id)
                raise
            self.stats.saw(job)
            if job["status"] not in (1, 3, 4):
                self.put_back(job_id)

    def run(self, stop, seed):
        rng = random.Random(seed)
        while not stop.is_set():
            try:
                self.act(rng)
            except ApiError:
                # Counted by the client; a refused connection (node down) backs off a little.
                time.sleep(0.2)
            time.sleep(rng.uniform(0.0, 0.05))


# --- Faults ---------------------------------------------------------------------------------

def wait_serving(node, client, bound):
    """Seconds until `node` answers an authenticated call that reads the database, or None."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < bound:
        try:
            client.call("ListVDCs", node=node, timeout=10)
            return time.monotonic() - t0
        except ApiError:
            time.sleep(0.2)
    return None


class Partition:
    """A network namespace for node-a, joined to this one by a veth pair: this side HOST,
    the namespace's side NODE. Cutting it drops what node-a sends to PostgreSQL."""

    def __init__(self, pg_port):
        k = random.randrange(256)
        self.ns = f"extsoak{os.getpid()}"
        self.host, self.node = f"10.250.{k}.1", f"10.250.{k}.2"
        self.pg_port = pg_port
        outside, inside = f"xs{os.getpid()}h", f"xs{os.getpid()}n"
        run = lambda *a: subprocess.run(a, check=True)
        run("ip", "netns", "add", self.ns)
        run("ip", "link", "add", outside, "type", "veth", "peer", "name", inside)
        run("ip", "link", "set", inside, "netns", self.ns)
        run("ip", "addr", "add", f"{self.host}/30", "dev", outside)
        run("ip", "link", "set", outside, "up")
        self.exec("ip", "addr", "add", f"{self.node}/30", "dev", inside)
        self.exec("ip", "link", "set", inside, "up")
        self.exec("ip", "link", "set", "lo", "up")

    def exec(self, *args):
        subprocess.run(["ip", "netns", "exec", self.ns] + list(args), check=True)

    def cut(self):
        self.exec("nft", "add", "table", "inet", "soakcut")
        self.exec("nft", "add chain inet soakcut out { type filter hook output priority 0 ; }")
        self.exec("nft", "add", "rule", "inet", "soakcut", "out", "ip", "daddr", self.host,
                  "tcp", "dport", str(self.pg_port), "drop")

    def mend(self):
        self.exec("nft", "delete", "table", "inet", "soakcut")

    def remove(self):
        out = subprocess.run(["ip", "netns", "pids", self.ns], capture_output=True, text=True)
        for pid in out.stdout.split():
            subprocess.run(["kill", "-9", pid])
        subprocess.run(["ip", "netns", "del", self.ns])


class SmallDisk:
    """A file system of its own (a loop-mounted ext4 image) at `path`, to fill."""

    def __init__(self, work, path, megabytes):
        self.image = os.path.join(work, "disk.img")
        self.path = path
        subprocess.run(["truncate", "-s", f"{megabytes}M", self.image], check=True)
        subprocess.run(["mkfs.ext4", "-q", "-F", self.image], check=True)
        subprocess.run(["mount", "-o", "loop", self.image, path], check=True)
        self.filler = os.path.join(path, "filler")

    def fill(self):
        """Takes every free block; returns how many bytes."""
        st = os.statvfs(self.path)
        free = st.f_bavail * st.f_frsize
        with open(self.filler, "wb") as f:
            try:
                os.posix_fallocate(f.fileno(), 0, max(free, 4096))
            except OSError:
                pass
            # What fallocate left (metadata reserve, rounding), written until ENOSPC.
            try:
                while True:
                    f.write(bytes(1 << 20))
                    f.flush()
            except OSError:
                pass
        return free

    def empty(self):
        try:
            os.remove(self.filler)
        except FileNotFoundError:
            pass

    def remove(self):
        subprocess.run(["umount", "-l", self.path])


def faults(stop, nodes, pg, probe, rng, every, pg_modes, record, kinds, partition, disk, ceph):
    while not stop.wait(rng.uniform(every * 0.5, every * 1.5)):
        kind = rng.choice(kinds)
        t0 = time.monotonic()
        if kind == "osd":
            log("fault: Ceph's OSD killed (-9) and started again")
            ceph.restart_osd()
            what = "Ceph OSD killed and restarted"
        elif kind == "partition":
            down = rng.uniform(5.0, 25.0)
            log(f"fault: node-a cut off from PostgreSQL for {down:.1f} s")
            partition.cut()
            time.sleep(down)
            partition.mend()
            what = f"node-a cut off from PostgreSQL for {down:.1f} s"
        elif kind == "fulldisk":
            held = rng.uniform(3.0, 10.0)
            free = disk.fill()
            log(f"fault: data directory full ({free >> 20} MiB filled) for {held:.1f} s")
            time.sleep(held)
            disk.empty()
            what = f"data directory full ({free >> 20} MiB filled) for {held:.1f} s"
        elif kind == "kill":
            node = rng.choice(nodes)
            node.kill9()
            down = rng.uniform(0.5, 5.0)
            log(f"fault: kill -9 {node.name}; restarting it in {down:.1f} s")
            time.sleep(down)
            node.start()
            what = f"kill -9 {node.name}, down {down:.1f} s"
        else:
            mode = rng.choice(pg_modes)
            log(f"fault: pg_ctl restart -m {mode}")
            pg.restart(mode)
            what = f"PostgreSQL restart -m {mode} ({time.monotonic() - t0:.1f} s)"
        recovered = {}
        for node in nodes:
            recovered[node.name] = wait_serving(node, probe, 90)
        record.append((kind, what, recovered))
        log(f"  serving again: " + ", ".join(
            f"{n} {'NEVER' if s is None else f'{s:.1f} s'}" for n, s in recovered.items()))


# --- The invariants -------------------------------------------------------------------------

def volume_files(data_dir):
    d = os.path.join(data_dir, "volumes")
    return {f for f in os.listdir(d) if not f.startswith(".")} if os.path.isdir(d) else set()


def check_invariants(pg, volumes, stats, images):
    """A list of (name, ok, detail)."""
    results = []

    def check(name, problems, detail_ok=""):
        results.append((name, not problems,
                        detail_ok if not problems else "; ".join(map(str, problems[:8])) +
                        (f" (and {len(problems) - 8} more)" if len(problems) > 8 else "")))

    q = pg.psql
    unended = q("SELECT id, job_type, status, attempts, lease_owner FROM jobs "
                "WHERE status NOT IN (1, 3, 4)")
    check("every job ended", unended, f"{q('SELECT count(*) FROM jobs')[0][0]} jobs")
    jobs = {int(r[0]): (int(r[1]), int(r[2]), int(r[3])) for r in q(
        "SELECT id, status, coalesce(item_id, 0), result_committed FROM jobs")}
    unknown = [j for j in stats.jobs if j not in jobs]
    check("every job a client was given exists", unknown)

    # Files and rows.
    rows = {r[0]: r for r in q("SELECT file, format, size, id FROM volumes")}
    files = volumes.names()
    check("no orphan volume file", sorted(files - set(rows)), f"{len(files)} files")
    check("no volume row naming a missing file", sorted(set(rows) - files),
          f"{len(rows)} rows")
    wrong_size = []
    for name, fmt, size, _ in rows.values():
        if fmt == "raw" and name in files:
            actual = volumes.size(name)
            if actual != int(size):
                wrong_size.append(f"{name}: {actual} bytes, row says {size}")
    check("raw volume files have their size", wrong_size)
    unused = q("SELECT v.id, v.file FROM volumes v WHERE "
               "NOT EXISTS (SELECT 1 FROM disks WHERE volume_id = v.id) AND "
               "NOT EXISTS (SELECT 1 FROM images WHERE volume_id = v.id) AND "
               "NOT EXISTS (SELECT 1 FROM snapshots WHERE volume_id = v.id) AND "
               "NOT EXISTS (SELECT 1 FROM volumes b WHERE b.backing_volume_id = v.id)")
    check("no volume row nothing uses", unused)
    check("no staged file left", volumes.staged())

    # Half-made disks and servers.
    transitional = q("SELECT id, status FROM servers WHERE status NOT IN (2, 5)")
    check("no server left starting, stopping or in error", transitional,
          f"{q('SELECT count(*) FROM servers')[0][0]} servers")
    bootless = q("SELECT s.id FROM servers s WHERE NOT EXISTS "
                 "(SELECT 1 FROM disks d WHERE d.server_id = s.id AND d.attach_index = 0)")
    check("every server has its boot disk", bootless)
    short = q("SELECT s.id, count(d.id) FROM servers s LEFT JOIN disks d "
              "ON d.origin_server_id = s.id GROUP BY s.id HAVING count(d.id) <> 2")
    check("every server has the 2 disks it was made with", short)
    strays = q("SELECT d.id, d.origin_server_id FROM disks d WHERE d.origin_server_id IS NOT NULL "
               "AND NOT EXISTS (SELECT 1 FROM servers s WHERE s.id = d.origin_server_id)")
    check("no disk left of a destroyed server", strays)

    # Fetched disks: their data is the image's.
    bad_data = []
    fetched = q("SELECT d.id, v.file FROM jobs j JOIN disks d ON d.id = j.item_id "
                "JOIN volumes v ON v.id = d.volume_id "
                "WHERE j.job_type = 'FetchDisk' AND j.status = 1 AND j.item_type = 'disk'")
    for disk_id, file in fetched:
        if file not in files:
            continue
        head = volumes.head(file, len(images.raw))
        if head is None:
            continue
        if hashlib.md5(head).hexdigest() != images.md5:
            bad_data.append(f"disk {disk_id}")
    check("fetched disks hold the image", bad_data, f"{len(fetched)} fetched disks still there")

    # No job run twice.
    # The load names each fetch's disk uniquely: at most one disk of that name, the job's item.
    twice = []
    disks_named = collections.defaultdict(list)
    for disk_id, name in q("SELECT id, name FROM disks"):
        disks_named[name].append(int(disk_id))
    for job_id, (customer, op, name) in stats.jobs.items():
        if op != "FetchDisk" or job_id not in jobs:
            continue
        status, item_id, committed = jobs[job_id]
        disks = disks_named.get(name, [])
        if len(disks) > 1:
            twice.append(f"FetchDisk job {job_id} made disks {disks}")
        elif disks and (status != 1 or disks[0] != item_id):
            twice.append(f"FetchDisk job {job_id} (status {status}, item {item_id}) "
                         f"has disk {disks[0]}")
        if status == 1 and not committed:
            twice.append(f"FetchDisk job {job_id} succeeded without committing a result")
    usage = q("SELECT job_id, count(*) FROM usage_records WHERE kind = 'bytes_fetched' "
              "GROUP BY job_id HAVING count(*) > 1")
    twice += [f"job {j} billed fetched bytes {n} times" for j, n in usage]
    unbilled = q("SELECT j.id FROM jobs j WHERE j.job_type = 'FetchDisk' AND j.status = 1 "
                 "AND NOT EXISTS (SELECT 1 FROM usage_records u WHERE u.job_id = j.id "
                 "AND u.kind = 'bytes_fetched')")
    twice += [f"job {j} succeeded without its usage line" for (j,) in unbilled]
    failed_committed = q("SELECT id, job_type, status FROM jobs WHERE status IN (3, 4) "
                         "AND result_committed <> 0")
    twice += [f"job {j} ({t}) ended {s} but committed a result" for j, t, s in failed_committed]
    check("no job run twice", twice)
    changed = list(stats.end_changed)
    for job_id, seen in list(stats.seen_end.items()):
        if job_id in jobs and jobs[job_id][0] != seen:
            changed.append((job_id, seen, jobs[job_id][0]))
    check("a job's end, once seen, never changes", changed,
          f"{len(stats.seen_end)} ends seen by clients")
    return results


# --- Main -----------------------------------------------------------------------------------

def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--binary", required=True)
    p.add_argument("--minutes", type=float, default=float(os.environ.get("SOAK_MINUTES", 3)))
    p.add_argument("--customers", type=int, default=int(os.environ.get("SOAK_CUSTOMERS", 4)))
    p.add_argument("--threads", type=int, default=int(os.environ.get("SOAK_THREADS", 2)),
                   help="load threads per customer")
    p.add_argument("--fault-every", type=float,
                   default=float(os.environ.get("SOAK_FAULT_EVERY", 20)),
                   help="mean seconds between faults")
    p.add_argument("--pg-modes", default=os.environ.get("SOAK_PG_MODES", "fast"),
                   help="pg_ctl restart modes to pick from (comma-separated: fast,immediate)")
    p.add_argument("--faults", default=os.environ.get("SOAK_FAULTS", "kill,pg"),
                   help="faults to pick from (comma-separated: kill,pg,partition,fulldisk)")
    p.add_argument("--storage", default=os.environ.get("SOAK_STORAGE", "files"),
                   choices=["files", "rbd"], help="where volumes go (osd faults need rbd)")
    p.add_argument("--disk-mb", type=int, default=int(os.environ.get("SOAK_DISK_MB", 2048)),
                   help="size of the data directory's file system with the fulldisk fault")
    p.add_argument("--seed", type=int, default=int(os.environ.get("SOAK_SEED", time.time())))
    p.add_argument("--keep", action="store_true", default=os.environ.get("SOAK_KEEP") == "1",
                   help="keep the work directory (logs, data, database)")
    a = p.parse_args()
    kinds = [k for k in a.faults.split(",") if k]
    unknown = set(kinds) - {"kill", "pg", "partition", "fulldisk", "osd"}
    if unknown or not kinds:
        p.error(f"--faults: unknown {sorted(unknown)}" if unknown else "--faults: none given")
    if "osd" in kinds:
        a.storage = "rbd"
    if a.storage == "rbd" and "partition" in kinds:
        p.error("--faults partition runs node-a in a namespace of its own, which does not "
                "reach Ceph's loopback ports: not with rbd storage")

    work = tempfile.mkdtemp(prefix="extility-soak.")
    os.chmod(work, 0o755)
    log(f"work directory {work}; seed {a.seed}")
    rng = random.Random(a.seed)
    pg = None
    nodes = []
    partition = disk = ceph = None
    try:
        if a.storage == "rbd":
            ceph = Ceph(work)
        if "partition" in kinds:
            partition = Partition(0)
        pg = Postgres(work, also_listen=partition.host if partition else None)
        images = Images(partition.host if partition else "127.0.0.1")
        data_dir = os.path.join(work, "data")
        os.makedirs(data_dir)
        if "fulldisk" in kinds:
            disk = SmallDisk(work, data_dir, a.disk_mb)
        subprocess.run([a.binary, "migrate", "--database-url", pg.url], check=True,
                       stdout=subprocess.DEVNULL)
        extra = ["--job-lease-seconds", "10", "--orphan-sweep-seconds", "5",
                 "--orphan-min-age-seconds", "45", "--min-free-space", "0",
                 "--allow-fetch-from", f"{images.host}/32"]
        if ceph:
            extra += ceph.server_args()
        volumes = Volumes(data_dir, ceph)
        if partition:
            partition.pg_port = pg.port
            across = pg.url.replace("127.0.0.1", partition.host)
            nodes = [Node("node-a", a.binary, work, data_dir, across, extra,
                          netns=(partition.ns, partition.node)),
                     Node("node-b", a.binary, work, data_dir, pg.url, extra)]
        else:
            nodes = [Node(n, a.binary, work, data_dir, pg.url, extra)
                     for n in ("node-a", "node-b")]
        for node in nodes:
            node.start()

        stats = Stats()
        customers = []
        for i in range(a.customers):
            email, password = f"soak{i}@example.com", f"soak-password-{i}"
            out = subprocess.run([a.binary, "customer", "add", "--email", email, "--password",
                                  password, "--database-url", pg.url],
                                 check=True, capture_output=True, text=True).stdout
            vdc = int([l for l in out.splitlines() if l.startswith("vdc_id=")][0][7:])
            customers.append(Customer(i, nodes, stats, images, vdc, email, password))
        probe = Client(nodes, "soak0@example.com", "soak-password-0", Stats())
        for node in nodes:
            if wait_serving(node, probe, 60) is None:
                a.keep = True
                raise SystemExit(f"{node.name} did not start; see {work}/serve-{node.name}.log")

        log(f"load: {a.customers} customers x {a.threads} threads for {a.minutes:g} min; "
            f"a fault every ~{a.fault_every:g} s among {','.join(kinds)}")
        stop = threading.Event()
        threads = [threading.Thread(target=c.run, args=(stop, rng.random()), daemon=True)
                   for c in customers for _ in range(a.threads)]
        fault_log = []
        fault_thread = threading.Thread(
            target=faults, args=(stop, nodes, pg, probe, random.Random(rng.random()),
                                 a.fault_every, a.pg_modes.split(","), fault_log, kinds,
                                 partition, disk, ceph), daemon=True)
        t0 = time.monotonic()
        for t in threads:
            t.start()
        fault_thread.start()
        last_report = t0
        while time.monotonic() - t0 < a.minutes * 60:
            time.sleep(1)
            if time.monotonic() - last_report >= 30:
                last_report = time.monotonic()
                with stats.lock:
                    n, errs = sum(stats.calls.values()), sum(stats.errors.values())
                log(f"{last_report - t0:.0f} s: {n} calls, {errs} errors, "
                    f"{len(stats.jobs)} jobs queued, {len(fault_log)} faults")
        stop.set()
        load_seconds = time.monotonic() - t0
        for t in threads:
            t.join(120)
        fault_thread.join(300)
        log("load stopped; letting every job end")

        # Every node must serve at the end, whatever the last fault was.
        for node in nodes:
            if node.proc.poll() is not None:
                log(f"{node.name} had exited ({node.proc.returncode}); starting it")
                node.start()
        final_recovery = {n.name: wait_serving(n, probe, 90) for n in nodes}
        t1 = time.monotonic()
        while time.monotonic() - t1 < 180:
            left = int(pg.psql("SELECT count(*) FROM jobs WHERE status NOT IN (1, 3, 4)")[0][0])
            if left == 0:
                break
            time.sleep(1)
        drain = time.monotonic() - t1
        # Orphans a kill left behind go at the next sweep once 45 s old (the default is an
        # hour; younger than a commit can wait for the database, so no file is swept early).
        t2 = time.monotonic()
        while time.monotonic() - t2 < 90:
            files = volumes.names()
            rows = {r[0] for r in pg.psql("SELECT file FROM volumes")}
            if files <= rows:
                break
            time.sleep(1)
        sweep_wait = time.monotonic() - t2
        # Let clients see the ends of the jobs they queued, through the API.
        for c in customers:
            for job_id in list(c.pending):
                try:
                    stats.saw(c.client.call("GetJob", {"job_id": job_id}))
                except ApiError:
                    pass
        invariants = check_invariants(pg, volumes, stats, images)
        swept = 0
        for node in nodes:
            with open(os.path.join(work, f"serve-{node.name}.log"), errors="replace") as f:
                swept += sum("no volume refers to" in line for line in f)

        # The report.
        total = sum(stats.calls.values())
        ok = sum(stats.ok.values())
        print()
        print(f"soak: {load_seconds / 60:.1f} min of load, {a.customers} customers x "
              f"{a.threads} threads, 2 nodes, seed {a.seed}")
        print(f"calls: {total} ({total / load_seconds:.1f}/s), {ok} answered without error "
              f"({ok / load_seconds:.1f}/s)")
        print(f"  {'operation':<16} {'calls':>7} {'ok':>7}  errors")
        for op, n in sorted(stats.calls.items(), key=lambda kv: -kv[1]):
            errs = ", ".join(f"{code} {m}" for (o, code), m in
                             sorted(stats.errors_by_op.items(), key=lambda kv: -kv[1])
                             if o == op)
            print(f"  {op:<16} {n:>7} {stats.ok[op]:>7}  {errs}")
        print("errors by code: " + (", ".join(f"{c} {n}" for c, n in stats.errors.most_common())
                                    or "none"))
        print("jobs by type and final status:")
        for job_type, status, n in pg.psql(
                "SELECT job_type, status, count(*) FROM jobs GROUP BY 1, 2 ORDER BY 1, 2"):
            print(f"  {job_type:<14} {JOB_STATUS.get(int(status), status):<12} {n}")
        codes = pg.psql("SELECT job_type, error_code, count(*) FROM jobs WHERE status = 3 "
                        "GROUP BY 1, 2 ORDER BY 3 DESC")
        if codes:
            print("  failed jobs by code: " + ", ".join(f"{t} {c} {n}" for t, c, n in codes))
        attempts = pg.psql("SELECT attempts, count(*) FROM jobs GROUP BY 1 ORDER BY 1")
        print("  attempts per job: " + ", ".join(f"{n} x {k}" for k, n in attempts))
        kills = [f for f in fault_log if f[0] == "kill"]
        restarts = [f for f in fault_log if f[0] == "pg"]
        cuts = [f for f in fault_log if f[0] == "partition"]
        fills = [f for f in fault_log if f[0] == "fulldisk"]
        osds = [f for f in fault_log if f[0] == "osd"]
        print(f"faults: {len(kills)} node kills (kill -9, restarted), "
              f"{len(restarts)} PostgreSQL restarts, {len(cuts)} partitions of node-a from "
              f"PostgreSQL, {len(fills)} full data directories, {len(osds)} OSD restarts"
              + (f" (volumes in RBD)" if ceph else ""))
        never = []
        for kind, what, recovered in fault_log:
            times = ", ".join(f"{n} {'NEVER' if s is None else f'{s:.1f} s'}"
                              for n, s in recovered.items())
            print(f"  {what}: serving again: {times}")
            never += [f"{n} after {what}" for n, s in recovered.items() if s is None]
        never += [f"{n} at the end" for n, s in final_recovery.items() if s is None]
        print(f"after the load: every job ended {drain:.1f} s later; orphan files cleared "
              f"{sweep_wait:.1f} s after that; the nodes' sweeps deleted {swept} orphan files")
        print("invariants:")
        failed = False
        invariants.insert(0, ("every node served again after every fault", not never,
                              "; ".join(never)))
        for name, good, detail in invariants:
            failed |= not good
            print(f"  {'ok  ' if good else 'FAIL'} {name}" + (f": {detail}" if detail else ""))
        print("SOAK PASSED" if not failed else "SOAK FAILED")
        if failed:
            a.keep = True
        return 1 if failed else 0
    finally:
        for node in nodes:
            node.stop()
        if pg is not None:
            pg.stop()
        if partition is not None:
            partition.remove()
        if ceph is not None:
            ceph.stop()
        if disk is not None:
            disk.empty()
            if not a.keep:
                disk.remove()
        if a.keep:
            log(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
