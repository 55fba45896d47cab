#!/usr/bin/env python3
"""check_deploy.py — tools/deploy/ (Kubernetes manifests, systemd unit, Containerfile)
against the Kubernetes schemas, systemd, dpkg and the built daemon, so the files cannot
drift from the code. Meson tests of suite 'deploy' (tests/meson.build), run with the
project venv's python (PyYAML, kubernetes-validate):

  check_deploy.py k8s       SRC BUILD DYNEMBD DYNEMBCTL
  check_deploy.py seccomp   SRC BUILD DYNEMBD DYNEMBCTL
  check_deploy.py systemd   SRC BUILD DYNEMBD DYNEMBCTL
  check_deploy.py container SRC BUILD DYNEMBD DYNEMBCTL

k8s: every object of tools/deploy/kubernetes/*.yaml validates (strict: no unknown field)
  against the bundled schemas of the oldest and newest Kubernetes checked here (a
  misspelt copy must be refused, so the validator is known to look); then the fields
  that must agree: the image (the project's version; the binaries where meson installs
  them), the config path in the args inside the ConfigMap's mount, the socket directory
  (the INI's socket, the DaemonSet's hostPath, the trainer pod's same hostPath at the
  same path, which is libdynemb's default socket), huge pages (requests equal to limits,
  memory and cpu requested, [quota] host_bytes within them), the security context (not
  privileged, no privilege escalation, drop ALL, add nothing to the daemon under the
  shipped seccomp profile (SYS_NICE only under RuntimeDefault) and only CHOWN to the
  directory-owning init container; non-root pods; the daemon's uid in
  allow_uids so its probes get in, the trainer's group in allow_gids), the metrics port
  (INI, containerPort, annotation, Service), the rolling update and the PDB. The
  ConfigMap's INI is printed back by `dynembd --config INI --print-config` with the same
  values, and the daemon is started on it (paths moved to a temporary directory): the
  DaemonSet's own probe commands (dynembctl's path rewritten) pass while it serves,
  readiness fails on a degraded daemon (a stand-in dynembctl that exits 1) and
  liveness only on a down one (exit 2), /metrics answers, and SIGTERM exits 0.
seccomp: tools/deploy/kubernetes/seccomp/dynembd.json (the DaemonSet's Localhost profile)
  allows io_uring and mbind and none of a list of calls no sidecar needs (unshare,
  setns, ptrace, bpf, keyctl, ...); loaded with libseccomp, it runs the daemon on the
  ConfigMap's INI (paths moved) as the DaemonSet's uid and group with no capability
  (when the test runs as root), a trainer of trainer-pod.yaml's uid and group stepping
  a durable (WAL, io_uring) Adagrad table, a snapshot, /metrics, the DaemonSet's probes
  (as the daemon's uid, under the profile: they pass, and fail on a down daemon) and
  SIGTERM, with no EPERM or error in the log; the same profile without io_uring_setup
  must stop the daemon (so the filter is known to apply). SKIP (77) without libseccomp.
systemd: ExecStart is meson's installed dynembd; RuntimeDirectory, StateDirectory and
  CacheDirectory hold the INI's socket, data_dir and tier_dir; the hardening keys are
  set; tools/deploy/systemd/dynembd.ini starts the daemon with no_new_privs and (on
  kernels with PR_SET_MDWE) MemoryDenyWriteExecute's refusal of executable mappings,
  and a trainer steps a durable table on it; `systemd-analyze verify`
  prints nothing on the unit (ExecStart pointed at the build's daemon, as the installed
  one may be absent; verify exits 0 on unknown keys, so any output fails, and a
  misspelt copy must make it print). SKIP (77) without systemd-analyze (after the
  other checks, which fail the test if they fail).
container: the runtime stage of tools/deploy/Containerfile installs a package for every
  library that `readelf -d` lists as NEEDED by dynembd, dynembctl and libdynemb (libc6
  is in the base image), every library `ldd` resolves belongs to one of those packages or
  their dependencies (dpkg's Depends), and every library package it names provides one
  of the NEEDED libraries; the build stage copies every directory meson.build descends
  into, and Containerfile.dockerignore lets each of them into the context; the entry
  point is the installed dynembd and the USER the DaemonSet's uid.
  SKIP (77) without dpkg, ldd or readelf.
Exit 0 when everything holds, 1 with one line per problem.
"""

import configparser
import copy
import ctypes
import ctypes.util
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

KUBE_VERSIONS = ("1.29.0", "1.37.0")  # oldest and newest checked (bundled by kubernetes-validate)
# The daemon's capabilities (dynembd.yaml says why): none under the shipped seccomp
# profile; SYS_NICE under RuntimeDefault, which passes mbind only to holders of it.
DAEMON_CAPS = {"Localhost": set(), "RuntimeDefault": {"SYS_NICE"}}
INIT_CAPS = {"CHOWN"}  # the init container that chowns the hostPath directories
BASE_IMAGE_PACKAGES = {"libc6"}  # in debian:12-slim

problems = []


def fail(msg):
    problems.append(msg)


def finish():
    for p in problems:
        print("check_deploy: " + p, file=sys.stderr)
    if not problems:
        print("check_deploy: ok")
    sys.exit(1 if problems else 0)


def skip(why):
    print("check_deploy: SKIP: " + why)
    sys.exit(77)


def run(argv, **kw):
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, **kw)


def installed_paths(build):
    """{build path or name: install path} of `meson install` (meson-info)."""
    with open(os.path.join(build, "meson-info", "intro-installed.json")) as f:
        return json.load(f)


def installed(build, binary):
    for src, dst in installed_paths(build).items():
        if os.path.basename(src) == binary:
            return dst
    sys.exit(f"check_deploy: meson does not install {binary}")


def project_version(build):
    with open(os.path.join(build, "meson-info", "intro-projectinfo.json")) as f:
        return json.load(f)["version"]


def parse_ini(text):
    cp = configparser.ConfigParser(interpolation=None, comment_prefixes=(";", "#"))
    cp.read_string(text)
    return cp


SIZE = re.compile(r"^(\d+)\s*([KMGT]?)(i?B)?$")


def size_bytes(v):
    m = SIZE.match(v.strip())
    if not m:
        return None
    return int(m.group(1)) * 1024 ** " KMGT".index(m.group(2) or " ")


def quantity_bytes(q):
    """Kubernetes quantity (Ki, Mi, Gi, or plain bytes) in bytes."""
    m = re.match(r"^(\d+)(Ki|Mi|Gi|Ti)?$", str(q))
    if not m:
        return None
    return int(m.group(1)) * {None: 1, "Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30,
                              "Ti": 1 << 40}[m.group(2)]


def printed_config(dynembd, args):
    p = run([dynembd] + args + ["--print-config"])
    if p.returncode != 0:
        fail(f"dynembd {' '.join(args)} --print-config: exit {p.returncode}: {p.stderr.strip()}")
        return None
    return parse_ini(p.stdout)


def check_printed(name, ini, printed):
    """Every key the INI sets is printed back with the same value."""
    for sec in ini.sections():
        for key, val in ini.items(sec):
            if not printed.has_section(sec) or not printed.has_option(sec, key):
                fail(f"{name}: [{sec}] {key} is not printed by --print-config")
                continue
            got = printed.get(sec, key)
            want = val
            if key in ("allow_uids", "allow_gids"):  # names print as ids
                want = ",".join(ids(val, key == "allow_gids"))
            if size_bytes(val) is not None and size_bytes(got) is not None:
                want, got = size_bytes(val), size_bytes(got)
            if re.sub(r"\s*,\s*", ",", str(want)) != str(got):  # lists print without spaces
                fail(f"{name}: [{sec}] {key} = {val}, the daemon prints {got}")


def ids(lst, groups):
    import grp
    import pwd
    out = []
    for x in (t.strip() for t in lst.split(",")):
        if x and not x.isdigit():
            x = str(grp.getgrnam(x).gr_gid if groups else pwd.getpwnam(x).pw_uid)
        if x:
            out.append(x)
    return out


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Daemon:
    """dynembd in the foreground on INI, with the given flags (paths in a temp dir)."""

    def __init__(self, dynembd, ini_path, flags, log, preexec=None):
        self.log = open(log, "w")
        self.p = subprocess.Popen([dynembd, "--foreground", "--config", ini_path] + flags,
                                  stdout=self.log, stderr=self.log, preexec_fn=preexec)

    def wait_socket(self, path):
        for _ in range(200):
            if os.path.exists(path):
                return True
            if self.p.poll() is not None:
                return False
            time.sleep(0.05)
        return False

    def stop(self):
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
        try:
            return self.p.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.p.kill()
            return self.p.wait()
        finally:
            self.log.close()


def serve_check(name, dynembd, ini_text, tmp, extra_flags, port, preexec=None):
    """Start the daemon on ini_text (its paths moved under tmp); returns (daemon, socket)."""
    ini_path = os.path.join(tmp, name + ".ini")
    with open(ini_path, "w") as f:
        f.write(ini_text)
    sock = os.path.join(tmp, name + "-run", "dynemb.sock")
    flags = ["--socket", sock, "--data-dir", os.path.join(tmp, name + "-data"),
             "--export-dir", os.path.join(tmp, name + "-exports"),
             "--tier-dir", os.path.join(tmp, name + "-tier"),
             "--metrics-listen", f"127.0.0.1:{port}"] + extra_flags
    d = Daemon(dynembd, ini_path, flags, os.path.join(tmp, name + ".log"), preexec)
    if not d.wait_socket(sock):
        d.stop()
        with open(os.path.join(tmp, name + ".log")) as f:
            fail(f"{name}: dynembd did not start on the INI: {f.read().strip()[-2000:]}")
        return None, sock
    return d, sock


def wait_ready(dynembctl, sock, preexec=None):
    """The socket exists once bound, a moment before it listens: wait for health 0."""
    for _ in range(100):
        r = subprocess.run([dynembctl, "--socket", sock, "--quiet", "health"],
                           capture_output=True, timeout=30, preexec_fn=preexec)
        if r.returncode == 0:
            return True
        time.sleep(0.05)
    return False


def metrics_ok(port):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
            return r.status == 200 and b"dynemb_build_info" in r.read()
    except OSError:
        return False


# ---- Kubernetes ------------------------------------------------------------------------

def load_yaml(path):
    import yaml
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


def validate_schemas(files):
    import kubernetes_validate as kv
    for path, docs in files.items():
        for d in docs:
            what = f"{os.path.basename(path)}: {d.get('kind')}/{d.get('metadata', {}).get('name')}"
            for v in KUBE_VERSIONS:
                try:
                    kv.validate(d, v, strict=True)
                except kv.ValidationError as e:
                    fail(f"{what}: not valid for Kubernetes {v}: {str(e).splitlines()[0]}")
                except (kv.SchemaNotFoundError, kv.InvalidSchemaError) as e:
                    fail(f"{what}: no schema for Kubernetes {v}: {e}")
    # the negative control: a misspelt field must be refused
    pod = next(d for docs in files.values() for d in docs if d["kind"] == "Pod")
    bad = copy.deepcopy(pod)
    bad["spec"]["containers"][0]["securityContext"]["privilegd"] = True
    try:
        kv.validate(bad, KUBE_VERSIONS[-1], strict=True)
        fail("kubernetes-validate accepted a misspelt field (privilegd): the schemas were not checked")
    except kv.ValidationError:
        pass


def one(docs, kind):
    found = [d for d in docs if d["kind"] == kind]
    if len(found) != 1:
        fail(f"dynembd.yaml: {len(found)} objects of kind {kind}, want 1")
        return None
    return found[0]


def mount_of(container, volumes, mount_path):
    """The volume mounted at mount_path in container, or None."""
    for m in container.get("volumeMounts", []):
        if m["mountPath"].rstrip("/") == mount_path.rstrip("/"):
            return volumes.get(m["name"]), m
    return None, None


def check_security(what, pod_spec, container, allowed_caps, nonroot=True):
    sc = container.get("securityContext", {})
    if sc.get("privileged", False):
        fail(f"{what}: privileged")
    if sc.get("allowPrivilegeEscalation") is not False:
        fail(f"{what}: allowPrivilegeEscalation is not false")
    caps = sc.get("capabilities", {})
    if caps.get("drop") != ["ALL"]:
        fail(f"{what}: capabilities.drop is {caps.get('drop')}, want [ALL]")
    added = set(caps.get("add", []))
    if added != allowed_caps:
        fail(f"{what}: capabilities.add is {sorted(added)}, want {sorted(allowed_caps)}")
    for k in ("hostNetwork", "hostPID", "hostIPC"):
        if pod_spec.get(k):
            fail(f"{what}: {k}")
    pod_sc = pod_spec.get("securityContext", {})
    if nonroot:
        if not sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")):
            fail(f"{what}: runAsNonRoot is not set")
        if sc.get("runAsUser", pod_sc.get("runAsUser")) in (0, None):
            fail(f"{what}: runs as root (or an image-chosen uid)")


def probe_argvs(container):
    return {k: container[k]["exec"]["command"] for k in
            ("startupProbe", "readinessProbe", "livenessProbe") if k in container}


def run_probe(argv, dynembctl_path, installed_ctl, socket_default, sock, preexec=None):
    argv = [a.replace(installed_ctl, dynembctl_path).replace(socket_default, sock)
            for a in argv]
    return subprocess.run(argv, capture_output=True, text=True, timeout=30,
                          preexec_fn=preexec).returncode


def check_k8s(src, build, dynembd, dynembctl):
    kdir = os.path.join(src, "tools", "deploy", "kubernetes")
    files = {os.path.join(kdir, f): load_yaml(os.path.join(kdir, f))
             for f in sorted(os.listdir(kdir)) if f.endswith(".yaml")}
    validate_schemas(files)
    docs = files[os.path.join(kdir, "dynembd.yaml")]
    trainer = one(files[os.path.join(kdir, "trainer-pod.yaml")], "Pod")
    cm, svc, ds, pdb = (one(docs, k) for k in ("ConfigMap", "Service", "DaemonSet",
                                               "PodDisruptionBudget"))
    if None in (cm, svc, ds, pdb, trainer):
        return
    installed_d = installed(build, "dynembd")
    installed_ctl = installed(build, "dynembctl")
    spec = ds["spec"]["template"]["spec"]
    pod_labels = ds["spec"]["template"]["metadata"]["labels"]
    annotations = ds["spec"]["template"]["metadata"].get("annotations", {})
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    main = next((c for c in spec["containers"] if c["name"] == "dynembd"), None)
    if main is None:
        fail("DaemonSet: no container named dynembd")
        return

    # image: one image, tagged with the project's version; the installed binaries
    version = project_version(build)
    for c in spec.get("initContainers", []) + spec["containers"]:
        if c["image"].rsplit(":", 1)[-1] != version:
            fail(f"DaemonSet container {c['name']}: image {c['image']}, want the tag {version}")
        if c["image"] != main["image"]:
            fail(f"DaemonSet container {c['name']}: image {c['image']} differs from {main['image']}")
    if main.get("command") != [installed_d]:
        fail(f"DaemonSet: command {main.get('command')}, want [{installed_d}] (meson install)")

    # config: --config PATH inside the ConfigMap's mount, a key of the ConfigMap
    args = main.get("args", [])
    if "--config" not in args or args.index("--config") + 1 >= len(args):
        fail(f"DaemonSet: args {args} have no --config FILE")
        return
    cfg_path = args[args.index("--config") + 1]
    vol, _ = mount_of(main, volumes, os.path.dirname(cfg_path))
    if not vol or vol.get("configMap", {}).get("name") != cm["metadata"]["name"]:
        fail(f"DaemonSet: {os.path.dirname(cfg_path)} (of --config {cfg_path}) is not the "
             f"ConfigMap {cm['metadata']['name']}'s mount")
    key = os.path.basename(cfg_path)
    if key not in cm["data"]:
        fail(f"ConfigMap: no key {key} (the --config file)")
        return
    if set(args) - {"--config", cfg_path, "--foreground"}:
        fail(f"DaemonSet: args {args}: the ConfigMap should be the whole configuration")
    if "--foreground" not in args:
        fail("DaemonSet: dynembd must run with --foreground (it detaches otherwise)")
    ini_text = cm["data"][key]
    ini = parse_ini(ini_text)

    # the printed configuration is the INI's
    printed = printed_config(dynembd, ["--config", write_tmp(ini_text)])
    if printed is not None:
        check_printed("ConfigMap INI", ini, printed)
    default = printed_config(dynembd, [])
    default_sock = default.get("server", "socket") if default else "/run/dynemb/dynemb.sock"

    # socket: the INI's, in the hostPath shared with the trainer at the same path
    sock = ini.get("server", "socket", fallback=default_sock)
    sock_dir = os.path.dirname(sock)
    vol, _ = mount_of(main, volumes, sock_dir)
    host_dir = (vol or {}).get("hostPath", {}).get("path")
    if not host_dir:
        fail(f"DaemonSet: the socket directory {sock_dir} is not a hostPath mount")
    tvols = {v["name"]: v for v in trainer["spec"].get("volumes", [])}
    tmain = trainer["spec"]["containers"][0]
    tvol, tm = mount_of(tmain, tvols, sock_dir)
    if not tvol or tvol.get("hostPath", {}).get("path") != host_dir:
        fail(f"trainer pod: does not mount the hostPath {host_dir} at {sock_dir}")
    if sock != default_sock:
        fail(f"ConfigMap: socket {sock} is not libdynemb's default {default_sock} "
             "(the trainer pod relies on it)")
    env = {e["name"]: e.get("value") for e in tmain.get("env", [])}
    if env.get("DYNEMB_SOCKET", sock) != sock:
        fail(f"trainer pod: DYNEMB_SOCKET {env['DYNEMB_SOCKET']} is not {sock}")
    if trainer["spec"].get("nodeSelector") != spec.get("nodeSelector"):
        fail("trainer pod: its nodeSelector is not the DaemonSet's (it may land on a node "
             "without a daemon)")
    for k in ("data_dir", "export_dir"):
        path = ini.get("persistence", k, fallback="")
        vol, _ = mount_of(main, volumes, os.path.dirname(path))
        if path and (not vol or "hostPath" not in vol):
            fail(f"DaemonSet: {k} {path} is not under a hostPath mount (it would not "
                 "outlive the pod)")
    exports = ini.get("persistence", "export_dir", fallback="")
    init_cmd = " ".join(" ".join(c.get("command", []) + c.get("args", []))
                        for c in spec.get("initContainers", []))
    if exports and f"mkdir -p {exports}" not in init_cmd:
        fail(f"DaemonSet: no init container makes export_dir {exports} (the daemon does not)")
    tier = default.get("memory", "tier_dir") if default else ""
    tier = ini.get("memory", "tier_dir", fallback=tier)
    if tier and mount_of(main, volumes, tier)[0] is None and \
            mount_of(main, volumes, os.path.dirname(tier))[0] is None:
        fail(f"DaemonSet: tier_dir {tier} is not on a volume (the root file system is read-only)")

    # probes: dynembctl health on the INI's socket
    probes = probe_argvs(main)
    for k in ("readinessProbe", "livenessProbe"):
        if k not in probes:
            fail(f"DaemonSet: no {k}")
    for k, argv in probes.items():
        text = " ".join(argv)
        if installed_ctl not in text or "health" not in text or f"--socket {sock}" not in text:
            fail(f"DaemonSet {k}: {argv} does not run {installed_ctl} --socket {sock} health")

    # huge pages: requests equal to limits, with memory and cpu
    res = main.get("resources", {})
    req, lim = res.get("requests", {}), res.get("limits", {})
    if "hugepages-2Mi" not in req:
        fail("DaemonSet: no hugepages-2Mi request")
    for r in set(req) | set(lim):
        if r.startswith("hugepages-") and req.get(r) != lim.get(r):
            fail(f"DaemonSet: {r} requests {req.get(r)} != limits {lim.get(r)}")
    for r in ("memory", "cpu"):
        if r not in req:
            fail(f"DaemonSet: no {r} request")
    hb = ini.get("quota", "host_bytes", fallback=None)
    hp = quantity_bytes(req.get("hugepages-2Mi", 0))
    if hb is not None and hp and size_bytes(hb) is not None and size_bytes(hb) > hp:
        fail(f"ConfigMap: [quota] host_bytes {hb} is more than the pod's hugepages-2Mi")
    workers = int(ini.get("server", "workers", fallback="1"))
    cpu = str(req.get("cpu", "0"))
    if cpu.isdigit() and workers > int(cpu):
        fail(f"DaemonSet: {workers} workers on {req.get('cpu')} CPUs")

    # security
    seccomp = spec.get("securityContext", {}).get("seccompProfile", {}).get("type")
    if seccomp not in DAEMON_CAPS:
        fail(f"DaemonSet: seccompProfile {seccomp}, want one of {sorted(DAEMON_CAPS)}")
    check_security("DaemonSet container dynembd", spec, main, DAEMON_CAPS.get(seccomp, set()))
    for c in spec.get("initContainers", []):
        check_security(f"DaemonSet init container {c['name']}", spec, c, INIT_CAPS, nonroot=False)
    check_security("trainer pod", trainer["spec"], tmain, set())
    uid = main.get("securityContext", {}).get("runAsUser", spec.get("securityContext", {}).get("runAsUser"))
    allow_uids = [x.strip() for x in ini.get("server", "allow_uids", fallback="").split(",") if x.strip()]
    allow_gids = [x.strip() for x in ini.get("server", "allow_gids", fallback="").split(",") if x.strip()]
    if str(uid) not in allow_uids:
        fail(f"ConfigMap: allow_uids {allow_uids} lacks the daemon's uid {uid}: "
             "its probes' dynembctl health could not connect")
    tsc = {**trainer["spec"].get("securityContext", {}), **tmain.get("securityContext", {})}
    if str(tsc.get("runAsUser")) not in allow_uids and str(tsc.get("runAsGroup")) not in allow_gids:
        fail("trainer pod: neither its uid nor its group is in allow_uids / allow_gids")
    cf_user = containerfile_user(src)
    if cf_user and cf_user.split(":")[0] != str(uid):
        fail(f"Containerfile: USER {cf_user}, the DaemonSet runs as {uid}")

    # metrics: one port everywhere, reachable from outside the pod
    listen = ini.get("metrics", "listen", fallback="")
    mport = listen.rsplit(":", 1)[-1] if listen else None
    if not listen or listen.startswith(("127.", "localhost", "[::1]")) or ":" not in listen:
        fail(f"ConfigMap: [metrics] listen {listen!r} is not reachable by Prometheus")
    cports = {p.get("name"): p["containerPort"] for p in main.get("ports", [])}
    if str(cports.get("metrics")) != str(mport):
        fail(f"DaemonSet: containerPort metrics {cports.get('metrics')} != listen port {mport}")
    if annotations.get("prometheus.io/scrape") != "true" or \
            annotations.get("prometheus.io/port") != str(mport):
        fail(f"DaemonSet: prometheus annotations {annotations} do not name port {mport}")

    # Service, rolling update, PDB
    if svc["spec"].get("clusterIP") != "None":
        fail("Service: not headless (clusterIP: None)")
    if svc["spec"].get("selector", {}).items() - pod_labels.items():
        fail("Service: its selector does not select the DaemonSet's pods")
    if not any(str(p.get("targetPort")) in ("metrics", str(mport)) for p in svc["spec"].get("ports", [])):
        fail("Service: no port for metrics")
    us = ds["spec"].get("updateStrategy", {})
    if us.get("type") != "RollingUpdate" or us.get("rollingUpdate", {}).get("maxUnavailable") != 1:
        fail(f"DaemonSet: updateStrategy {us}, want RollingUpdate with maxUnavailable 1")
    if pdb["spec"].get("maxUnavailable") != 1 or \
            pdb["spec"].get("selector", {}).get("matchLabels", {}).items() - pod_labels.items():
        fail("PodDisruptionBudget: want maxUnavailable 1 over the DaemonSet's pods")

    # the real daemon on the INI, and the probes as the kubelet runs them
    with tempfile.TemporaryDirectory(prefix="dynemb-deploy.") as tmp:
        port = free_port()
        d, tsock = serve_check("k8s", dynembd, ini_text, tmp,
                               ["--allow-uid", ",".join(allow_uids + [str(os.getuid())])], port)
        if d is None:
            return
        try:
            if not wait_ready(dynembctl, tsock):
                fail("the daemon on the ConfigMap's INI never reports healthy")
            for k, argv in probes.items():
                rc = run_probe(argv, dynembctl, installed_ctl, sock, tsock)
                if rc != 0:
                    fail(f"DaemonSet {k} exits {rc} on a serving daemon")
            if not metrics_ok(port):
                fail("the daemon on the ConfigMap's INI does not answer GET /metrics")
            # degraded (1) and down (2), from a stand-in dynembctl
            for status, ready, alive in ((1, False, True), (2, False, False)):
                fake = os.path.join(tmp, f"dynembctl-{status}")
                with open(fake, "w") as f:
                    f.write(f"#!/bin/sh\nexit {status}\n")
                os.chmod(fake, 0o755)
                for k, want in (("readinessProbe", ready), ("livenessProbe", alive)):
                    if k in probes:
                        ok = run_probe(probes[k], fake, installed_ctl, sock, tsock) == 0
                        if ok != want:
                            fail(f"DaemonSet {k}: {'passes' if ok else 'fails'} when "
                                 f"dynembctl health exits {status}")
        finally:
            rc = d.stop()
        if rc != 0:
            fail(f"dynembd on the ConfigMap's INI: exit {rc} on SIGTERM")
        elif probes.get("livenessProbe") and \
                run_probe(probes["livenessProbe"], dynembctl, installed_ctl, sock, tsock) == 0:
            fail("DaemonSet livenessProbe passes with the daemon stopped")


_tmpfiles = []


def write_tmp(text):
    fd, path = tempfile.mkstemp(suffix=".ini", prefix="dynemb-deploy.")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    _tmpfiles.append(path)
    return path


# ---- seccomp ---------------------------------------------------------------------------

SCMP_ACT_ALLOW = 0x7FFF0000
CMP_OPS = {"SCMP_CMP_NE": 1, "SCMP_CMP_LT": 2, "SCMP_CMP_LE": 3, "SCMP_CMP_EQ": 4,
           "SCMP_CMP_GE": 5, "SCMP_CMP_GT": 6, "SCMP_CMP_MASKED_EQ": 7}
# what the profile must never allow (the container runtimes' defaults refuse them too)
NEVER = {"unshare", "setns", "clone3", "mount", "umount2", "pivot_root", "chroot", "ptrace",
         "bpf", "perf_event_open", "keyctl", "add_key", "request_key", "userfaultfd",
         "process_vm_readv", "process_vm_writev", "kcmp", "init_module", "finit_module",
         "delete_module", "kexec_load", "reboot", "swapon", "acct", "open_by_handle_at",
         "move_pages", "migrate_pages"}


def scmp_act_errno(e):
    return 0x00050000 | (e & 0xFFFF)


class ScmpArg(ctypes.Structure):  # libseccomp's struct scmp_arg_cmp
    _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int), ("datum_a", ctypes.c_uint64),
                ("datum_b", ctypes.c_uint64)]


def seccomp_filter(profile, without=()):
    """A libseccomp filter context built from an OCI (Kubernetes Localhost) profile, for
    the native architecture; syscalls in `without` are left to the default action."""
    lib = ctypes.CDLL("libseccomp.so.2", use_errno=True)
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_rule_add_array.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int,
                                           ctypes.c_uint, ctypes.POINTER(ScmpArg)]
    lib.seccomp_load.argtypes = [ctypes.c_void_p]
    if profile["defaultAction"] != "SCMP_ACT_ERRNO":
        fail(f"seccomp profile: defaultAction {profile['defaultAction']}, want SCMP_ACT_ERRNO")
    ctx = lib.seccomp_init(scmp_act_errno(profile.get("defaultErrnoRet", 1)))
    for rule in profile["syscalls"]:
        act = {"SCMP_ACT_ALLOW": SCMP_ACT_ALLOW,
               "SCMP_ACT_ERRNO": scmp_act_errno(rule.get("errnoRet", 1))}[rule["action"]]
        args = rule.get("args") or []
        arr = (ScmpArg * max(1, len(args)))(*[ScmpArg(a["index"], CMP_OPS[a["op"]],
                                                      a["value"], a.get("valueTwo", 0))
                                              for a in args])
        for name in rule["names"]:
            if name in without:
                continue
            nr = lib.seccomp_syscall_resolve_name(name.encode())
            if nr < 0:  # not a syscall of this architecture (runc skips these too)
                continue
            r = lib.seccomp_rule_add_array(ctx, act, nr, len(args), arr)
            if r != 0:
                fail(f"seccomp profile: libseccomp refuses the rule for {name}: {r}")
    return lambda: lib.seccomp_load(ctx)


def others_can_reach(path):
    """Whether a user other than the owner can read path (every directory above it
    searchable by others)."""
    path = os.path.realpath(path)
    if not os.stat(path).st_mode & 0o004:
        return False
    d = os.path.dirname(path)
    while True:
        if not os.stat(d).st_mode & 0o001:
            return False
        if d == "/":
            return True
        d = os.path.dirname(d)


def check_seccomp(src, build, dynembd, dynembctl):
    import numpy as np
    if not ctypes.util.find_library("seccomp"):
        skip("libseccomp is not installed")
    path = os.path.join(src, "tools", "deploy", "kubernetes", "seccomp", "dynembd.json")
    with open(path) as f:
        profile = json.load(f)
    allowed = {n for r in profile["syscalls"] if r["action"] == "SCMP_ACT_ALLOW"
               for n in r["names"] if not r.get("args")}
    for n in sorted(allowed & NEVER):
        fail(f"seccomp profile: allows {n}")
    for n in ("io_uring_setup", "io_uring_enter", "io_uring_register", "mbind", "memfd_create"):
        if n not in allowed:
            fail(f"seccomp profile: does not allow {n}, which dynembd calls")
    # the DaemonSet names it
    ds = next(d for d in load_yaml(os.path.join(src, "tools", "deploy", "kubernetes",
                                                "dynembd.yaml")) if d["kind"] == "DaemonSet")
    sp = ds["spec"]["template"]["spec"].get("securityContext", {}).get("seccompProfile", {})
    if sp.get("type") == "Localhost" and \
            sp.get("localhostProfile") != "dynemb/" + os.path.basename(path):
        fail(f"DaemonSet: localhostProfile {sp.get('localhostProfile')}, want "
             f"dynemb/{os.path.basename(path)} (the kubelet's seccomp directory)")

    # The pod as the kubelet runs it: the ConfigMap's INI (paths moved to a temporary
    # directory), under the profile, as the DaemonSet's uid with no capability (when
    # this test runs as root), probes as that uid, and a trainer of trainer-pod.yaml's
    # uid and group writing durably (io_uring) through the socket.
    docs = load_yaml(os.path.join(src, "tools", "deploy", "kubernetes", "dynembd.yaml"))
    cm = next(d for d in docs if d["kind"] == "ConfigMap")
    ini_text = next(iter(cm["data"].values()))
    pod_sc = ds["spec"]["template"]["spec"].get("securityContext", {})
    uid, gid = pod_sc.get("runAsUser", 0), pod_sc.get("runAsGroup", 0)
    trainer = load_yaml(os.path.join(src, "tools", "deploy", "kubernetes", "trainer-pod.yaml"))[0]
    tsc = trainer["spec"].get("securityContext", {})
    tuid, tgid = tsc.get("runAsUser", 0), tsc.get("runAsGroup", 0)
    # other uids must reach the binaries, the package and the interpreter
    needed_paths = [dynembd, dynembctl, os.path.join(src, "tf_op", "python"),
                    os.path.realpath(sys.executable), os.path.dirname(np.__file__)]
    as_root = os.getuid() == 0 and all(others_can_reach(p_) for p_ in needed_paths)
    if not as_root:
        print("check_deploy: not root, or the build is out of other users' reach: the "
              "daemon and the trainer run as this user, not as the manifests' uids")

    def become(u, g, then=None):
        def pre():
            if as_root:
                os.setgroups([])
                os.setgid(g)
                os.setuid(u)
            if then:
                then()
        return pre

    main = next(c for c in ds["spec"]["template"]["spec"]["containers"] if c["name"] == "dynembd")
    probes = probe_argvs(main)
    ctl = installed(build, "dynembctl")
    lib = next(s_ for s_ in installed_paths(build)
               if os.path.basename(s_).startswith("libdynemb.so.0."))
    client_env = dict(os.environ, DYNEMB_LIB=lib,
                      PYTHONPATH=os.path.realpath(os.path.join(src, "tf_op", "python")),
                      PYTHONDONTWRITEBYTECODE="1")
    with tempfile.TemporaryDirectory(prefix="dynemb-deploy.") as tmp:
        os.chmod(tmp, 0o755)
        ini_path = os.path.join(tmp, "dynembd.ini")
        with open(ini_path, "w") as f:
            f.write(ini_text)
        os.chmod(ini_path, 0o644)
        for without, want_ok in (((), True), (("io_uring_setup",), False)):
            run_dir = os.path.join(tmp, "run" + str(len(without)))
            data = os.path.join(tmp, "lib" + str(len(without)))
            for d_ in (run_dir, data, os.path.join(data, "exports")):  # the init container
                os.mkdir(d_, 0o755)
                if as_root:
                    os.chown(d_, uid, gid)
            sock = os.path.join(run_dir, "dynemb.sock")
            port = free_port()
            log = os.path.join(tmp, "seccomp.log")
            flags = ["--foreground", "--config", ini_path, "--socket", sock,
                     "--data-dir", os.path.join(data, "data"),
                     "--export-dir", os.path.join(data, "exports"),
                     "--tier-dir", os.path.join(data, "tier"),
                     "--metrics-listen", f"127.0.0.1:{port}"]
            if not as_root:
                flags += ["--allow-uid", str(os.getuid())]
            with open(log, "w") as lf:
                p = subprocess.Popen([dynembd] + flags, stdout=lf, stderr=lf,
                                     preexec_fn=become(uid, gid, seccomp_filter(profile, without)))
            d = Daemon.__new__(Daemon)
            d.p, d.log = p, open(os.devnull, "w")
            up = d.wait_socket(sock) and p.poll() is None
            if up:
                time.sleep(0.3)  # the WAL opens after the socket is bound
                up = p.poll() is None and wait_ready(dynembctl, sock, become(uid, gid))
            if not want_ok:
                d.stop()
                if up:
                    fail("dynembd with io_uring_setup denied kept running: the filter was "
                         "not applied, so the profile check above means nothing")
                continue
            try:
                if not up:
                    raise RuntimeError("did not start")
                r = subprocess.run([sys.executable, "-c", TRAINER, sock], env=client_env,
                                   capture_output=True, text=True, timeout=60,
                                   preexec_fn=become(tuid, tgid))
                if r.returncode != 0 or r.stdout.strip() != "ok":
                    fail(f"the trainer (uid {tuid} gid {tgid}) on the daemon under the "
                         f"profile: exit {r.returncode}: {r.stdout.strip()} {r.stderr.strip()[-1500:]}")
                # `kubectl exec` of dynembctl in the daemon's container: its uid, its
                # profile ([namespace all] grants it snapshot and export)
                exported = os.path.join(data, "exports", "seccomp.dexp")
                for argv in (["snapshot"], ["export", "seccomp", exported], ["status"]):
                    r = subprocess.run([dynembctl, "--socket", sock, "--quiet"] + argv,
                                       capture_output=True, text=True, timeout=60,
                                       preexec_fn=become(uid, gid, seccomp_filter(profile)))
                    if r.returncode != 0:
                        fail(f"under the seccomp profile, as uid {uid}: dynembctl "
                             f"{argv[0]}: exit {r.returncode}: {r.stdout.strip()} "
                             f"{r.stderr.strip()}")
                if not os.path.isfile(exported) or os.path.getsize(exported) == 0:
                    fail(f"dynembctl export as uid {uid}: no file {exported}")
                if not metrics_ok(port):
                    fail("under the seccomp profile: GET /metrics fails")
                # the kubelet runs exec probes in the container: its uid, its profile
                for k, argv in probes.items():
                    rc = run_probe(argv, dynembctl, ctl, "/run/dynemb/dynemb.sock", sock,
                                   become(uid, gid, seccomp_filter(profile)))
                    if rc != 0:
                        fail(f"DaemonSet {k} exits {rc} under the seccomp profile")
                # and they still see a down daemon (the shell must get its child's status)
                fake = os.path.join(tmp, "dynembctl-down")
                with open(fake, "w") as f:
                    f.write("#!/bin/sh\nexit 2\n")
                os.chmod(fake, 0o755)
                for k, argv in probes.items():
                    if run_probe(argv, fake, ctl, "/run/dynemb/dynemb.sock", sock,
                                 become(uid, gid, seccomp_filter(profile))) == 0:
                        fail(f"DaemonSet {k} passes on a down daemon under the seccomp profile")
            except Exception as e:  # noqa: BLE001 - reported with the daemon's log
                fail(f"dynembd under the seccomp profile: {e}")
            finally:
                rc = d.stop()
            with open(log) as lf:
                text = lf.read()
            if rc != 0 or "Operation not permitted" in text or "level=error" in text or \
                    '"level":"error"' in text:
                fail(f"dynembd under the seccomp profile: exit {rc}; log: {text[-2000:]}")


# A trainer: a table with server-side Adagrad and sync durability (every update through
# the WAL), lookups and gradients; prints ok.
TRAINER = """
import sys, numpy as np, dynemb
with dynemb.Client(sys.argv[1]) as c:
    t = c.open("seccomp", dim=8, init="zeros", optimizer="adagrad", lr=0.1, durability="sync")
    keys = np.arange(1, 1001, dtype=np.int64)
    t.lookup(keys)
    assert t.apply_gradients(keys, np.ones((1000, 8), np.float32)) == 1000
    assert np.allclose(t.lookup(keys), -0.1), "the Adagrad step did not apply"
print("ok")
"""


# ---- systemd ---------------------------------------------------------------------------

def parse_unit(path):
    """[(section, key, value)] of a unit file."""
    out, sec = [], None
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line or line[0] in "#;":
                continue
            if line.startswith("["):
                sec = line.strip("[]")
                continue
            k, _, v = line.partition("=")
            out.append((sec, k.strip(), v.strip()))
    return out


def check_systemd(src, build, dynembd, dynembctl):
    analyze = shutil.which("systemd-analyze")
    sdir = os.path.join(src, "tools", "deploy", "systemd")
    unit = os.path.join(sdir, "dynembd.service")
    entries = parse_unit(unit)
    svc = {}
    for sec, k, v in entries:
        if sec == "Service":
            svc.setdefault(k, []).append(v)

    def get(k):
        return svc.get(k, [None])[-1]

    installed_d = installed(build, "dynembd")
    exec_start = (get("ExecStart") or "").split()
    if not exec_start or exec_start[0] != installed_d:
        fail(f"dynembd.service: ExecStart {get('ExecStart')} does not start {installed_d} "
             "(where meson installs it)")
    if "--config" not in exec_start:
        fail("dynembd.service: ExecStart has no --config")
        return
    cfg_installed = exec_start[exec_start.index("--config") + 1]
    with open(os.path.join(sdir, "dynembd.ini")) as f:
        ini_text = f.read()
    ini = parse_ini(ini_text)
    if get("Type") == "forking" and "--foreground" in exec_start:
        fail("dynembd.service: Type=forking with --foreground")
    if get("Type") in ("simple", "exec") and "--foreground" not in exec_start:
        fail("dynembd.service: Type=simple/exec without --foreground")
    sock = ini.get("server", "socket")
    if os.path.dirname(sock) != "/run/" + (get("RuntimeDirectory") or ""):
        fail(f"dynembd.service: RuntimeDirectory={get('RuntimeDirectory')} is not the "
             f"socket's directory {os.path.dirname(sock)}")
    for sec, k, base, directive in (("persistence", "data_dir", "/var/lib/", "StateDirectory"),
                                    ("persistence", "export_dir", "/var/lib/", "StateDirectory"),
                                    ("memory", "tier_dir", "/var/cache/", "CacheDirectory")):
        path = ini.get(sec, k, fallback="")
        made = [base + d_ for d_ in (get(directive) or "").split()]
        writable = made + \
            [p.lstrip("-") for v in svc.get("ReadWritePaths", []) for p in v.split()]
        if k == "export_dir" and path and path not in made:
            fail(f"dynembd.service: export_dir {path} is not made by {directive} "
                 "(the daemon does not make it)")
        if path and not any(path == w or path.startswith(w.rstrip("/") + "/") for w in writable):
            fail(f"dynembd.ini: {k} {path} is not writable under ProtectSystem=strict "
                 f"({directive}, ReadWritePaths)")
    want = {"NoNewPrivileges": "yes", "ProtectSystem": "strict", "ProtectHome": "yes",
            "PrivateTmp": "yes", "Restart": "on-failure", "CapabilityBoundingSet": "",
            "AmbientCapabilities": ""}
    for k, v in want.items():
        if get(k) != v:
            fail(f"dynembd.service: {k}={get(k)}, want {k}={v}")
    if not get("LimitMEMLOCK"):
        fail("dynembd.service: no LimitMEMLOCK (the WAL's io_uring buffers)")
    if get("User") in (None, "root", "0"):
        fail("dynembd.service: runs as root")

    # the example INI starts the daemon (the group name replaced by one that exists here)
    import grp
    mygroup = grp.getgrgid(os.getgid()).gr_name
    test_ini = ini_text.replace("dynemb-clients", mygroup)
    printed = printed_config(dynembd, ["--config", write_tmp(test_ini)])
    if printed is not None:
        check_printed("dynembd.ini", parse_ini(test_ini), printed)
    with tempfile.TemporaryDirectory(prefix="dynemb-deploy.") as tmp:
        port = free_port()
        # NoNewPrivileges and MemoryDenyWriteExecute as the kernel applies them (the
        # latter through PR_SET_MDWE where the kernel has it, 6.3 and later)
        def sandbox():
            libc = ctypes.CDLL(None, use_errno=True)
            if libc.prctl(38, 1, 0, 0, 0) != 0:  # PR_SET_NO_NEW_PRIVS
                os._exit(120)
            libc.prctl(65, 1, 0, 0, 0)  # PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN (6.3+)

        d, tsock = serve_check("systemd", dynembd, test_ini, tmp, [], port, sandbox)
        if d is not None:
            try:
                wait_ready(dynembctl, tsock)
                rc = run([dynembctl, "--socket", tsock, "--quiet", "health"]).returncode
                if rc != 0:
                    fail(f"dynembd on dynembd.ini: dynembctl health exits {rc} "
                         "(allow_gids with the caller's group)")
                lib = next(s_ for s_ in installed_paths(build)
                           if os.path.basename(s_).startswith("libdynemb.so.0."))
                env = dict(os.environ, DYNEMB_LIB=lib, PYTHONDONTWRITEBYTECODE="1",
                           PYTHONPATH=os.path.join(src, "tf_op", "python"))
                r = run([sys.executable, "-c", TRAINER, tsock], env=env)
                if r.returncode != 0 or r.stdout.strip() != "ok":
                    fail(f"dynembd on dynembd.ini, sandboxed: a trainer fails: "
                         f"{r.stdout.strip()} {r.stderr.strip()[-1500:]}")
                if not metrics_ok(port):
                    fail("dynembd on dynembd.ini: GET /metrics fails")
            finally:
                if d.stop() != 0:
                    fail("dynembd on dynembd.ini: nonzero exit on SIGTERM")
            with open(os.path.join(tmp, "systemd.log")) as f:
                text = f.read()
            if "level=error" in text or "Operation not permitted" in text:
                fail(f"dynembd on dynembd.ini, sandboxed: {text[-1500:]}")
        if cfg_installed != "/etc/dynemb/dynembd.ini":
            fail(f"dynembd.service: --config {cfg_installed}, the unit's comment installs "
                 "the INI as /etc/dynemb/dynembd.ini")

        # systemd-analyze verify: on a copy whose ExecStart is the build's daemon
        if not analyze:
            if problems:
                return
            skip("systemd-analyze is not installed (the other checks of the unit passed)")

        def verify(text, name):
            path = os.path.join(tmp, name)
            with open(path, "w") as f:
                f.write(text)
            p = run([analyze, "verify", "--man=no", path])
            return p.returncode, (p.stdout + p.stderr).strip()

        with open(unit) as f:
            text = f.read().replace(installed_d, os.path.abspath(dynembd))
        rc, out = verify(text, "dynembd.service")
        if rc != 0 or out:
            fail(f"systemd-analyze verify dynembd.service: exit {rc}: {out}")
        rc, out = verify(text.replace("ProtectHome=", "ProtectHoem="), "dynembd-bad.service")
        if not out:
            fail("systemd-analyze verify is silent on a misspelt key: the check sees nothing")


# ---- Containerfile ---------------------------------------------------------------------

def containerfile_lines(src):
    path = os.path.join(src, "tools", "deploy", "Containerfile")
    out, cur = [], ""
    with open(path) as f:
        for line in f:
            s = line.rstrip("\n")
            if s.strip().startswith("#") and not cur:
                continue
            if s.endswith("\\"):
                cur += s[:-1] + " "
                continue
            cur += s
            if cur.strip():
                out.append(cur.strip())
            cur = ""
    return out


def stages(src):
    st = []
    for line in containerfile_lines(src):
        if line.split()[0].upper() == "FROM":
            st.append([])
        if st:
            st[-1].append(line)
    return st


def containerfile_user(src):
    users = [l.split(None, 1)[1] for l in stages(src)[-1] if l.split()[0].upper() == "USER"]
    return users[-1] if users else None


def apt_packages(stage):
    pkgs = []
    for line in stage:
        if line.split()[0].upper() != "RUN":
            continue
        for cmd in re.split(r"&&|;", line[3:]):
            w = cmd.split()
            if "apt-get" in w and "install" in w:
                pkgs += [x for x in w[w.index("install") + 1:] if not x.startswith("-")]
    return pkgs


def needed(path):
    p = run(["readelf", "-d", path])
    return re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", p.stdout)


def ldd(path):
    """{soname: resolved path} of `ldd path`."""
    out = {}
    for line in run(["ldd", path]).stdout.splitlines():
        m = re.match(r"\s*(\S+) => (\S+) \(", line)
        if m:
            out[m.group(1)] = m.group(2)
            continue
        m = re.match(r"\s*(/\S+) \(", line)  # the dynamic loader, by its path
        if m:
            out[os.path.basename(m.group(1))] = m.group(1)
    return out


_owners = {}


def owner(path):
    if path not in _owners:
        _owners[path] = _owner(path)
    return _owners[path]


def _owner(path):
    for p in (os.path.realpath(path), path):
        r = run(["dpkg", "-S", p])
        if r.returncode == 0:
            return r.stdout.split(":")[0].split(",")[0].strip()
    return None


def depends_closure(pkgs):
    seen, todo = set(), list(pkgs)
    while todo:
        p = todo.pop()
        if p in seen:
            continue
        seen.add(p)
        r = run(["dpkg-query", "-W", "-f=${Depends}, ${Pre-Depends}", p])
        if r.returncode != 0:
            continue
        for alt in r.stdout.split(","):
            for dep in alt.split("|"):
                name = dep.strip().split(" ")[0].split(":")[0]
                if name:
                    todo.append(name)
    return seen


def check_container(src, build, dynembd, dynembctl):
    for tool in ("dpkg", "dpkg-query", "ldd", "readelf"):
        if not shutil.which(tool):
            skip(f"{tool} is not installed")
    st = stages(src)
    if len(st) < 2:
        fail("Containerfile: want a build stage and a runtime stage")
        return
    runtime = apt_packages(st[-1])
    build_pkgs = apt_packages(st[0])
    if not runtime:
        fail("Containerfile: the runtime stage installs no package")
    if any(p.endswith("-dev") for p in runtime) or "gcc" in runtime or "meson" in runtime:
        fail(f"Containerfile: build tools in the runtime stage: {runtime}")
    if "meson" not in build_pkgs:
        fail("Containerfile: the build stage does not install meson")

    libdynemb = next(src_ for src_ in installed_paths(build)
                     if os.path.basename(src_).startswith("libdynemb.so.0."))
    ours = {"libdynemb.so.0"}
    binaries = [dynembd, dynembctl, libdynemb]
    have = set(runtime) | BASE_IMAGE_PACKAGES
    closure = depends_closure(have)
    providers = set()
    for b in binaries:
        loaded = ldd(b)
        for so in needed(b):
            if so in ours:
                continue
            path = loaded.get(so)
            pkg = owner(path) if path else None
            if pkg is None:
                fail(f"{os.path.basename(b)} needs {so}: no Debian package owns {path}")
                continue
            providers.add(pkg)
            if pkg not in have:
                fail(f"Containerfile: {os.path.basename(b)} needs {so} ({pkg}), which the "
                     "runtime stage does not install")
        for so, path in loaded.items():
            if so in ours:
                continue
            pkg = owner(path)
            if pkg is None:
                fail(f"{os.path.basename(b)} loads {path}, which no Debian package owns")
            elif pkg not in closure:
                fail(f"Containerfile: {os.path.basename(b)} loads {so} from {pkg}, not among "
                     "the runtime stage's packages or their dependencies")
    for p in runtime:
        if p.startswith("lib") and p not in providers:
            fail(f"Containerfile: the runtime stage installs {p}, which provides none of the "
                 "libraries the binaries need")

    # the build stage copies every directory meson descends into from the top
    with open(os.path.join(src, "meson.build")) as f:
        top = {s.split("/")[0] for s in re.findall(r"^subdir\('([^']+)'\)", f.read(), re.M)}
    copied = set()
    for line in st[0]:
        w = line.split()
        if w[0].upper() == "COPY" and not any(x.startswith("--from") for x in w):
            for s in w[1:-1]:
                if not os.path.exists(os.path.join(src, s)):
                    fail(f"Containerfile: COPY {s}: no such file in the tree")
                copied.add(s.rstrip("/"))
    ignore = os.path.join(src, "tools", "deploy", "Containerfile.dockerignore")
    with open(ignore) as f:
        let_in = {l.strip()[1:].rstrip("/") for l in f if l.strip().startswith("!")}
    for s_ in sorted(copied - let_in):
        fail(f"Containerfile.dockerignore: COPY {s_} is not let into the build context")
    for d in sorted(top - copied):
        fail(f"Containerfile: the build stage does not copy {d}/ (meson.build descends into it)")
    for f in ("meson.build", "meson_options.txt"):
        if f not in copied:
            fail(f"Containerfile: the build stage does not copy {f}")
    entry = [l for l in st[-1] if l.split()[0].upper() == "ENTRYPOINT"]
    want = json.dumps([installed(build, "dynembd")])
    if not entry or json.loads(entry[-1].split(None, 1)[1]) != json.loads(want):
        fail(f"Containerfile: ENTRYPOINT is not {want}")


def main():
    if len(sys.argv) != 6 or sys.argv[1] not in ("k8s", "seccomp", "systemd", "container"):
        sys.exit(__doc__)
    what, src, build, dynembd, dynembctl = sys.argv[1:]
    try:
        {"k8s": check_k8s, "seccomp": check_seccomp, "systemd": check_systemd,
         "container": check_container}[what](
            src, build, dynembd, dynembctl)
    finally:
        for p in _tmpfiles:
            os.unlink(p)
    finish()


if __name__ == "__main__":
    main()
