"""Loading libdynemb.so and declaring its C prototypes (ctypes).

Search order (:func:`_open`):

1. ``$DYNEMB_LIB``: the full path of the library;
2. ``pkg-config --variable=libdir dynemb``: the libdynemb that ``meson install``
   installed with its ``dynemb.pc``;
3. ``ctypes.util.find_library('dynemb')``: one the dynamic linker knows;
4. ``$DYNEMB_BUILD/src/client/libdynemb.so``: a meson build directory (developers, tests).

Every C function the package calls is an attribute of :data:`api` and is looked up
there at call time, so tests can wrap one (``monkeypatch.setattr(_native.api, ...)``).
"""

import ctypes
import ctypes.util
import os
import subprocess

c_size_p = ctypes.POINTER(ctypes.c_size_t)
c_u64_p = ctypes.POINTER(ctypes.c_uint64)
c_int_p = ctypes.POINTER(ctypes.c_int)
c_vp = ctypes.c_void_p


class ConnectOpts(ctypes.Structure):
    """struct de_connect_opts"""
    _fields_ = [("name", ctypes.c_char_p), ("sq_entries", ctypes.c_uint32),
                ("data_bytes", ctypes.c_uint64), ("timeout_ms", ctypes.c_int)]


OPTIM_FIELDS = ("lr", "weight_decay", "momentum", "dampening", "beta1", "beta2", "eps",
                "initial_accumulator_value", "alpha", "l1", "l2", "lr_power", "ftrl_beta")


class OptimSpec(ctypes.Structure):
    """struct de_optim_spec"""
    _fields_ = [("kind", ctypes.c_int)] + [(f, ctypes.c_double) for f in OPTIM_FIELDS]


class AdmissionSpec(ctypes.Structure):
    """struct de_admission_spec"""
    _fields_ = [("mode", ctypes.c_int), ("min_count", ctypes.c_uint32),
                ("probability", ctypes.c_double), ("sketch_width", ctypes.c_uint32),
                ("sketch_depth", ctypes.c_uint32), ("reject_value", ctypes.c_int)]


class EvictionSpec(ctypes.Structure):
    """struct de_eviction_spec"""
    _fields_ = [("policy", ctypes.c_int), ("budget_bytes", ctypes.c_uint64),
                ("ttl", ctypes.c_uint64), ("ttl_unit", ctypes.c_int),
                ("lru_clock", ctypes.c_int), ("lfu_decay", ctypes.c_double),
                ("disk_tier", ctypes.c_bool)]


class DurabilitySpec(ctypes.Structure):
    """struct de_durability_spec"""
    _fields_ = [("mode", ctypes.c_int), ("window_ms", ctypes.c_uint32)]


class TableSpec(ctypes.Structure):
    """struct de_table_spec (enums are int-sized)"""
    _fields_ = [("name", ctypes.c_char_p), ("dim", ctypes.c_uint32),
                ("nslots", ctypes.c_uint32), ("init", ctypes.c_int),
                ("init_a", ctypes.c_float), ("init_b", ctypes.c_float),
                ("slot_init", ctypes.c_float), ("seed", ctypes.c_uint64),
                ("keys", ctypes.c_int), ("optim", OptimSpec), ("admission", AdmissionSpec),
                ("eviction", EvictionSpec), ("durability", DurabilitySpec)]


class Stats(ctypes.Structure):
    """struct de_stats"""
    _fields_ = [(f, ctypes.c_uint64) for f in (
        "keys", "rows_allocated", "rows_free", "row_bytes", "index_bytes", "arena_bytes",
        "segments", "splits", "dir_doublings", "arena_segments")] + [
        ("load_factor", ctypes.c_double), ("dim", ctypes.c_uint32),
        ("read_only", ctypes.c_uint32)] + [(f, ctypes.c_uint64) for f in (
        "admitted", "filtered", "grads_dropped", "evicted", "evicted_to_tier",
        "restored_from_tier", "returned_fresh", "resident_bytes", "budget_bytes",
        "wal_lsn", "durable_lsn", "snapshots", "snapshot_lsn")]


class SampleSpec(ctypes.Structure):
    """struct de_sample_spec"""
    _fields_ = [("kind", ctypes.c_int), ("num_sampled", ctypes.c_uint32),
                ("unique", ctypes.c_int), ("power", ctypes.c_double),
                ("seed", ctypes.c_uint64)]


class Progress(ctypes.Structure):
    """struct de_progress"""
    _fields_ = [("done", ctypes.c_uint64), ("total", ctypes.c_uint64), ("phase", ctypes.c_int),
                ("table_index", ctypes.c_uint32), ("table", ctypes.c_char_p)]


# int (*de_progress_cb)(void *ctx, const struct de_progress *p)
ProgressCb = ctypes.CFUNCTYPE(ctypes.c_int, c_vp, ctypes.POINTER(Progress))


class SnapshotResult(ctypes.Structure):
    """struct de_snapshot_result"""
    _fields_ = [("tables", ctypes.c_uint32), ("lsn", ctypes.c_uint64),
                ("rows", ctypes.c_uint64), ("bytes", ctypes.c_uint64)]


class ImportResult(ctypes.Structure):
    """struct de_import_result"""
    _fields_ = [("records", ctypes.c_uint64), ("imported", ctypes.c_uint64),
                ("dropped", ctypes.c_uint64), ("problem", ctypes.c_char * 128)]


# name: (restype, argtypes). Pointers to caller data are c_void_p so that a NumPy
# buffer address (ndarray.ctypes.data, an int) is passed as is: no copy, no conversion.
_PROTOS = {
    "de_connect": (ctypes.c_int, [ctypes.c_char_p, ctypes.POINTER(ConnectOpts), c_vp]),
    "de_close": (None, [c_vp]),
    "de_open": (ctypes.c_int, [c_vp, ctypes.POINTER(TableSpec), c_int_p]),
    "de_table_dim_of": (ctypes.c_uint32, [c_vp, ctypes.c_int]),
    "de_lookup": (ctypes.c_int, [c_vp, ctypes.c_int, c_vp, ctypes.c_size_t, c_vp, c_vp,
                                 ctypes.c_uint, ctypes.c_uint64]),
    "de_lookup_str": (ctypes.c_int, [c_vp, ctypes.c_int, c_vp, c_vp, ctypes.c_size_t, c_vp,
                                     c_vp, ctypes.c_uint, ctypes.c_uint64]),
    "de_update": (ctypes.c_int, [c_vp, ctypes.c_int, c_vp, ctypes.c_size_t, c_vp,
                                 ctypes.c_uint64, c_size_p]),
    "de_update_str": (ctypes.c_int, [c_vp, ctypes.c_int, c_vp, c_vp, ctypes.c_size_t, c_vp,
                                     ctypes.c_uint64, c_size_p]),
    "de_erase": (ctypes.c_int, [c_vp, ctypes.c_int, c_vp, ctypes.c_size_t, c_size_p]),
    "de_erase_str": (ctypes.c_int, [c_vp, ctypes.c_int, c_vp, c_vp, ctypes.c_size_t,
                                    c_size_p]),
    "de_stats": (ctypes.c_int, [c_vp, ctypes.c_int, ctypes.POINTER(Stats)]),
    "de_submit_lookup": (ctypes.c_int, [c_vp, ctypes.c_int, c_vp, ctypes.c_size_t,
                                        ctypes.c_uint, ctypes.c_uint64, c_u64_p]),
    "de_complete": (ctypes.c_int, [c_vp, ctypes.c_uint64, ctypes.c_int]),
    "de_request_vals": (c_vp, [c_vp, ctypes.c_uint64]),
    "de_zero_copy_counts": (None, [c_vp, c_u64_p, c_u64_p]),
    "de_optim_spec_defaults": (None, [ctypes.c_int, ctypes.POINTER(OptimSpec)]),
    "de_apply_gradients": (ctypes.c_int, [c_vp, ctypes.c_int, c_vp, ctypes.c_size_t, c_vp,
                                          ctypes.c_uint64, ctypes.c_double, c_size_p]),
    "de_apply_gradients_str": (ctypes.c_int, [c_vp, ctypes.c_int, c_vp, c_vp, ctypes.c_size_t,
                                              c_vp, ctypes.c_uint64, ctypes.c_double,
                                              c_size_p]),
    "de_strerror": (ctypes.c_char_p, [ctypes.c_int]),
    # sampling, top-k, key strings (DYNEMB_0.3)
    "de_sample": (ctypes.c_int, [c_vp, ctypes.c_int, ctypes.POINTER(SampleSpec), c_vp,
                                 ctypes.c_size_t, c_vp, c_vp, c_vp, c_vp]),
    "de_sample_str": (ctypes.c_int, [c_vp, ctypes.c_int, ctypes.POINTER(SampleSpec), c_vp,
                                     c_vp, ctypes.c_size_t, c_vp, c_vp, c_vp, c_vp]),
    "de_topk": (ctypes.c_int, [c_vp, ctypes.c_int, c_vp, ctypes.c_size_t, ctypes.c_uint32,
                               ctypes.c_int, c_vp, c_vp, c_vp]),
    "de_key_strings": (ctypes.c_int, [c_vp, ctypes.c_int, c_vp, ctypes.c_size_t, c_vp,
                                      ctypes.c_size_t, c_vp]),
    "de_string_key": (ctypes.c_int, [c_vp, ctypes.c_int, ctypes.c_char_p, ctypes.c_size_t,
                                     c_u64_p]),
    # persistence: snapshots, export, import through the daemon (DYNEMB_0.4)
    "de_snapshot": (ctypes.c_int, [c_vp, ctypes.c_char_p, ctypes.c_bool, ProgressCb, c_vp,
                                   ctypes.POINTER(SnapshotResult)]),
    "de_export_table": (ctypes.c_int, [c_vp, ctypes.c_char_p, ctypes.c_char_p, ProgressCb, c_vp,
                                 c_u64_p, c_u64_p]),
    "de_import_table": (ctypes.c_int, [c_vp, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_uint,
                                 ProgressCb, c_vp, ctypes.POINTER(ImportResult)]),
}


def _open():
    """Find and open libdynemb, trying the places of the module docstring in order:
    (library, path), or ImportError listing every place tried and what went wrong."""
    def pkg_config_libdir():
        try:
            p = subprocess.run(["pkg-config", "--variable=libdir", "dynemb"],
                               capture_output=True, text=True, timeout=10, check=False)
        except (OSError, subprocess.SubprocessError) as e:
            return None, f"pkg-config did not run ({e})"
        if p.returncode != 0 or not p.stdout.strip():
            return None, "no dynemb.pc on PKG_CONFIG_PATH"
        return os.path.join(p.stdout.strip(), "libdynemb.so"), None

    build = os.environ.get("DYNEMB_BUILD")
    places = [
        ("DYNEMB_LIB", lambda: (os.environ.get("DYNEMB_LIB"), "not set")),
        ("pkg-config --variable=libdir dynemb", pkg_config_libdir),
        ("find_library('dynemb')", lambda: (ctypes.util.find_library("dynemb"), "not found")),
        ("DYNEMB_BUILD", lambda: (os.path.join(build, "src", "client", "libdynemb.so")
                                  if build else None, "not set")),
    ]
    tried = []
    for how, where in places:
        path, why = where()
        if not path:
            tried.append(f"  {how}: {why}")
            continue
        try:
            return ctypes.CDLL(path), path
        except OSError as e:
            tried.append(f"  {how}: {path}: {e}")
    raise ImportError(
        "dynemb: cannot find libdynemb.so. Set DYNEMB_LIB to its full path, install it "
        "with `meson install` (found through pkg-config's dynemb.pc, or where the dynamic "
        "linker finds it), or set DYNEMB_BUILD to a meson build directory "
        "(DYNEMB_BUILD/src/client/libdynemb.so).\nTried:\n" + "\n".join(tried))


def load():
    """Load libdynemb and return it with prototypes set; ImportError if none loads."""
    lib, path = _open()
    for name, (res, args) in _PROTOS.items():
        fn = getattr(lib, name)
        fn.restype, fn.argtypes = res, args
    return lib, path


class _Api:
    """The C functions, one attribute each (replaceable in tests)."""


lib, lib_path = load()
api = _Api()
for _name in _PROTOS:
    setattr(api, _name, getattr(lib, _name))
del _name
