"""pytest fixtures for the dynemb Python package: a private dynembd per session.

The tests import the installed package (meson installs it into a venv under the build
directory, tests/python_venv.py): nothing here puts the source tree on sys.path. One
folder, selected by markers (registered in ../pyproject.toml): torch (dynemb.torch and the
demo), tensorflow (dynemb.tensorflow), slow (word2vec); the rest is the NumPy API.

Environment:
  DYNEMBD       path of the daemon binary (else DYNEMB_BUILD/src/server/dynembd)
  DYNEMB_BUILD  meson build directory (also how the package finds libdynemb.so,
                unless DYNEMB_LIB is set)
"""

import importlib.util
import itertools
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))


def tool_lib(name):
    """tools/<name>/ (demo_lib, word2vec_lib: the demo's and word2vec's helpers, which
    live in the tree, not in the package), imported from its file by name."""
    if name not in sys.modules:
        d = os.path.join(ROOT, "tools", name)
        spec = importlib.util.spec_from_file_location(
            name, os.path.join(d, "__init__.py"), submodule_search_locations=[d])
        mod = importlib.util.module_from_spec(spec)
        sys.modules[name] = mod
        spec.loader.exec_module(mod)
    return sys.modules[name]


def tf_op_library():
    """(path of libdynemb_tf.so, the tensorflow module) for the TensorFlow test modules, or
    a module-level skip that says why (meson builds the library where the project venv has
    TensorFlow)."""
    lib = os.environ.get("DYNEMB_TF_LIB") or os.path.join(
        os.environ.get("DYNEMB_BUILD", ""), "tf_op", "libdynemb_tf.so")
    if not os.path.exists(lib):
        pytest.skip(f"no TensorFlow op library at {lib} (meson builds it where the project "
                    "venv has TensorFlow)", allow_module_level=True)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return lib, pytest.importorskip("tensorflow")


def _dynembd_path():
    p = os.environ.get("DYNEMBD")
    if not p and os.environ.get("DYNEMB_BUILD"):
        p = os.path.join(os.environ["DYNEMB_BUILD"], "src", "server", "dynembd")
    if not p or not os.access(p, os.X_OK):
        pytest.fail(f"no dynembd binary (got {p!r}): set DYNEMBD or DYNEMB_BUILD")
    return p


def _wait_socket(path, proc, log, deadline_s=10.0):
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if proc.poll() is not None:
            pytest.fail(f"dynembd exited with {proc.returncode}:\n{log.read_text()}")
        if os.path.exists(path):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            try:
                s.connect(path)
                return
            except OSError:
                pass
            finally:
                s.close()
        time.sleep(0.02)
    proc.kill()
    proc.wait()
    pytest.fail(f"dynembd did not listen on {path} within {deadline_s}s:\n{log.read_text()}")


@pytest.fixture(scope="session")
def daemon(tmp_path_factory):
    """Start dynembd --foreground on a private socket; yields the socket path. At the end:
    SIGTERM, and the daemon must exit 0."""
    d = tmp_path_factory.mktemp("dynembd")
    sock = str(d / "d.sock")
    log = d / "dynembd.log"
    with open(log, "wb") as lf:
        # a data dir: tables that ask durability async/sync need one
        proc = subprocess.Popen([_dynembd_path(), "--foreground", "--socket", sock,
                                 "--segment-bytes", "4M", "--data-dir", str(d / "data"),
                                 "--allow-uid", str(os.geteuid())],
                                stdin=subprocess.DEVNULL, stdout=lf, stderr=subprocess.STDOUT)
    try:
        _wait_socket(sock, proc, log)
        yield sock
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                pytest.fail(f"dynembd ignored SIGTERM:\n{log.read_text()}")
    assert proc.returncode == 0, f"dynembd exited {proc.returncode}:\n{log.read_text()}"


@pytest.fixture
def client(daemon):
    import dynemb
    with dynemb.Client(daemon, name="pytest") as c:
        yield c


_names = itertools.count()


@pytest.fixture
def tname(request):
    """A table name unique in the session (1..63 bytes)."""
    return f"t{next(_names)}_{request.node.name}"[:63]
