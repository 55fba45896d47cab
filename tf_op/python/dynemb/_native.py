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


def _reserved(n):
    """The reserved tail of a struct that may grow (zero: ctypes zero-fills)."""
    return [("reserved", ctypes.c_uint64 * n)]


class ConnectOpts(ctypes.Structure):
    """struct dynemb_connect_opts"""
    _fields_ = [("name", ctypes.c_char_p), ("sq_entries", ctypes.c_uint32),
                ("data_bytes", ctypes.c_uint64), ("timeout_ms", ctypes.c_int)] + _reserved(8)


OPTIM_FIELDS = ("lr", "weight_decay", "momentum", "dampening", "beta1", "beta2", "eps",
                "initial_accumulator_value", "alpha", "l1", "l2", "lr_power", "ftrl_beta")


class OptimSpec(ctypes.Structure):
    """struct dynemb_optim_spec"""
    _fields_ = [("kind", ctypes.c_int)] + [(f, ctypes.c_double) for f in OPTIM_FIELDS] + \
        _reserved(4)


class AdmissionSpec(ctypes.Structure):
    """struct dynemb_admission_spec"""
    _fields_ = [("mode", ctypes.c_int), ("min_count", ctypes.c_uint32),
                ("probability", ctypes.c_double), ("sketch_width", ctypes.c_uint32),
                ("sketch_depth", ctypes.c_uint32), ("reject_value", ctypes.c_int)] + \
        _reserved(4)


class EvictionSpec(ctypes.Structure):
    """struct dynemb_eviction_spec"""
    _fields_ = [("policy", ctypes.c_int), ("budget_bytes", ctypes.c_uint64),
                ("ttl", ctypes.c_uint64), ("ttl_unit", ctypes.c_int),
                ("lru_clock", ctypes.c_int), ("lfu_decay", ctypes.c_double),
                ("disk_tier", ctypes.c_bool)] + _reserved(4)


class DurabilitySpec(ctypes.Structure):
    """struct dynemb_durability_spec"""
    _fields_ = [("mode", ctypes.c_int), ("window_ms", ctypes.c_uint32)] + _reserved(4)


class TableSpec(ctypes.Structure):
    """struct dynemb_table_spec (enums are int-sized)"""
    _fields_ = [("name", ctypes.c_char_p), ("dim", ctypes.c_uint32),
                ("nslots", ctypes.c_uint32), ("init", ctypes.c_int),
                ("init_a", ctypes.c_float), ("init_b", ctypes.c_float),
                ("slot_init", ctypes.c_float), ("seed", ctypes.c_uint64),
                ("keys", ctypes.c_int), ("optim", OptimSpec), ("admission", AdmissionSpec),
                ("eviction", EvictionSpec), ("durability", DurabilitySpec)] + _reserved(8)


class Stats(ctypes.Structure):
    """struct dynemb_stats"""
    _fields_ = [(f, ctypes.c_uint64) for f in (
        "keys", "rows_allocated", "rows_free", "row_bytes", "index_bytes", "arena_bytes",
        "segments", "splits", "dir_doublings", "arena_segments")] + [
        ("load_factor", ctypes.c_double), ("dim", ctypes.c_uint32),
        ("read_only", ctypes.c_uint32)] + [(f, ctypes.c_uint64) for f in (
        "admitted", "filtered", "grads_dropped", "evicted", "evicted_to_tier",
        "restored_from_tier", "returned_fresh", "resident_bytes", "budget_bytes",
        "wal_lsn", "durable_lsn", "snapshots", "snapshot_lsn", "index_refusals")] + _reserved(7)


class Status(ctypes.Structure):
    """struct dynemb_status"""
    _fields_ = [("version", ctypes.c_char * 32), ("uptime_ms", ctypes.c_uint64),
                ("pages_config", ctypes.c_uint32), ("pages_got", ctypes.c_uint32),
                ("numa_node", ctypes.c_int32)] + [(f, ctypes.c_uint32) for f in (
        "clients", "tables", "workers", "pid", "peers", "wal_state")] + [
        ("wal_err", ctypes.c_int32), ("wal_last_lsn", ctypes.c_uint64),
        ("wal_durable_lsn", ctypes.c_uint64), ("wal_error", ctypes.c_char * 128)] + _reserved(8)


class TableInfo(ctypes.Structure):
    """struct dynemb_table_info"""
    _fields_ = [("name", ctypes.c_char * 64), ("key_kind", ctypes.c_uint32),
                ("dim", ctypes.c_uint32)] + [(f, ctypes.c_uint64) for f in (
        "keys", "resident_bytes", "budget_bytes")] + [(f, ctypes.c_uint32) for f in (
        "read_only", "pages", "owner_uid", "eviction", "durability",
        "open_connections")] + _reserved(4)


LAT_BUCKETS = 21  # dynemb.h's DYNEMB_LAT_BUCKETS


class OpStat(ctypes.Structure):
    """struct dynemb_op_stat"""
    _fields_ = [("table", ctypes.c_char * 64), ("op", ctypes.c_uint32),
                ("pad", ctypes.c_uint32)] + [(f, ctypes.c_uint64) for f in (
        "requests", "errors", "keys", "sum_ns")] + [
        ("le", ctypes.c_uint64 * (LAT_BUCKETS + 1))] + _reserved(4)


class WalStats(ctypes.Structure):
    """struct dynemb_wal_stats"""
    _fields_ = [("present", ctypes.c_uint32), ("pad", ctypes.c_uint32)] + [
        (f, ctypes.c_uint64) for f in ("last_lsn", "durable_lsn", "bytes_written", "flushes",
                                       "fsyncs", "flush_ns_sum")] + [
        ("flush_le", ctypes.c_uint64 * (LAT_BUCKETS + 1))] + _reserved(4)


class SampleSpec(ctypes.Structure):
    """struct dynemb_sample_spec"""
    _fields_ = [("kind", ctypes.c_int), ("num_sampled", ctypes.c_uint32),
                ("unique", ctypes.c_int), ("power", ctypes.c_double),
                ("seed", ctypes.c_uint64)] + _reserved(8)


class Progress(ctypes.Structure):
    """struct dynemb_progress"""
    _fields_ = [("done", ctypes.c_uint64), ("total", ctypes.c_uint64), ("phase", ctypes.c_int),
                ("table_index", ctypes.c_uint32), ("table", ctypes.c_char_p)] + _reserved(8)


# int (*dynemb_progress_cb)(void *ctx, const struct dynemb_progress *p)
ProgressCb = ctypes.CFUNCTYPE(ctypes.c_int, c_vp, ctypes.POINTER(Progress))


class SnapshotResult(ctypes.Structure):
    """struct dynemb_snapshot_result"""
    _fields_ = [("tables", ctypes.c_uint32), ("lsn", ctypes.c_uint64),
                ("rows", ctypes.c_uint64), ("bytes", ctypes.c_uint64)] + _reserved(8)


class ImportResult(ctypes.Structure):
    """struct dynemb_import_result"""
    _fields_ = [("records", ctypes.c_uint64), ("imported", ctypes.c_uint64),
                ("dropped", ctypes.c_uint64), ("problem", ctypes.c_char * 128)] + _reserved(8)


class ServeResult(ctypes.Structure):
    """struct dynemb_serve_result"""
    _fields_ = [("version", ctypes.c_uint64), ("records", ctypes.c_uint64),
                ("bytes", ctypes.c_uint64), ("previous", ctypes.c_uint64)] + _reserved(4)


class ServeInfo(ctypes.Structure):
    """struct dynemb_serve_info"""
    _fields_ = [("version", ctypes.c_uint64), ("found", ctypes.c_uint64),
                ("missing", ctypes.c_uint64), ("switches", ctypes.c_uint64)] + _reserved(4)


# name: (restype, argtypes). Pointers to caller data are c_void_p so that a NumPy
# buffer address (ndarray.ctypes.data, an int) is passed as is: no copy, no conversion.
_PROTOS = {
    "dynemb_connect": (ctypes.c_int, [ctypes.c_char_p, ctypes.POINTER(ConnectOpts), c_vp]),
    "dynemb_close": (None, [c_vp]),
    "dynemb_open": (ctypes.c_int, [c_vp, ctypes.POINTER(TableSpec), c_int_p]),
    "dynemb_table_dim": (ctypes.c_uint32, [c_vp, ctypes.c_int]),
    "dynemb_lookup": (ctypes.c_int, [c_vp, ctypes.c_int, c_vp, ctypes.c_size_t, c_vp, c_vp,
                                 ctypes.c_uint, ctypes.c_uint64]),
    "dynemb_lookup_str": (ctypes.c_int, [c_vp, ctypes.c_int, c_vp, c_vp, ctypes.c_size_t, c_vp,
                                     c_vp, ctypes.c_uint, ctypes.c_uint64]),
    "dynemb_update": (ctypes.c_int, [c_vp, ctypes.c_int, c_vp, ctypes.c_size_t, c_vp,
                                 ctypes.c_uint64, c_size_p]),
    "dynemb_update_str": (ctypes.c_int, [c_vp, ctypes.c_int, c_vp, c_vp, ctypes.c_size_t, c_vp,
                                     ctypes.c_uint64, c_size_p]),
    "dynemb_erase": (ctypes.c_int, [c_vp, ctypes.c_int, c_vp, ctypes.c_size_t, c_size_p]),
    "dynemb_erase_str": (ctypes.c_int, [c_vp, ctypes.c_int, c_vp, c_vp, ctypes.c_size_t,
                                    c_size_p]),
    "dynemb_stats": (ctypes.c_int, [c_vp, ctypes.c_int, ctypes.POINTER(Stats)]),
    "dynemb_submit_lookup": (ctypes.c_int, [c_vp, ctypes.c_int, c_vp, ctypes.c_size_t,
                                        ctypes.c_uint, ctypes.c_uint64, c_u64_p]),
    "dynemb_complete": (ctypes.c_int, [c_vp, ctypes.c_uint64, ctypes.c_int]),
    "dynemb_request_vals": (c_vp, [c_vp, ctypes.c_uint64]),
    "dynemb_zero_copy_counts": (None, [c_vp, c_u64_p, c_u64_p]),
    "dynemb_optim_spec_defaults": (None, [ctypes.c_int, ctypes.POINTER(OptimSpec)]),
    "dynemb_apply_gradients": (ctypes.c_int, [c_vp, ctypes.c_int, c_vp, ctypes.c_size_t, c_vp,
                                          ctypes.c_uint64, ctypes.c_double, c_size_p]),
    "dynemb_apply_gradients_str": (ctypes.c_int, [c_vp, ctypes.c_int, c_vp, c_vp, ctypes.c_size_t,
                                              c_vp, ctypes.c_uint64, ctypes.c_double,
                                              c_size_p]),
    "dynemb_submit_apply_gradients": (ctypes.c_int, [c_vp, ctypes.c_int, c_vp, ctypes.c_size_t,
                                                 c_vp, ctypes.c_uint64, ctypes.c_double,
                                                 c_u64_p]),
    "dynemb_request_counts": (ctypes.c_int, [c_vp, ctypes.c_uint64, c_u64_p, c_u64_p]),
    "dynemb_strerror": (ctypes.c_char_p, [ctypes.c_int]),
    # sampling, top-k, key strings
    "dynemb_sample": (ctypes.c_int, [c_vp, ctypes.c_int, ctypes.POINTER(SampleSpec), c_vp,
                                 ctypes.c_size_t, c_vp, c_vp, c_vp, c_vp]),
    "dynemb_sample_str": (ctypes.c_int, [c_vp, ctypes.c_int, ctypes.POINTER(SampleSpec), c_vp,
                                     c_vp, ctypes.c_size_t, c_vp, c_vp, c_vp, c_vp]),
    "dynemb_topk": (ctypes.c_int, [c_vp, ctypes.c_int, c_vp, ctypes.c_size_t, ctypes.c_uint32,
                               ctypes.c_int, c_vp, c_vp, c_vp]),
    "dynemb_key_strings": (ctypes.c_int, [c_vp, ctypes.c_int, c_vp, ctypes.c_size_t, c_vp,
                                      ctypes.c_size_t, c_vp]),
    "dynemb_string_key": (ctypes.c_int, [c_vp, ctypes.c_int, ctypes.c_char_p, ctypes.c_size_t,
                                     c_u64_p]),
    # persistence: snapshots, export, import through the daemon
    "dynemb_snapshot": (ctypes.c_int, [c_vp, ctypes.c_char_p, ctypes.c_bool, ProgressCb, c_vp,
                                   ctypes.POINTER(SnapshotResult)]),
    "dynemb_export": (ctypes.c_int, [c_vp, ctypes.c_char_p, ctypes.c_char_p, ProgressCb, c_vp,
                                 c_u64_p, c_u64_p]),
    "dynemb_import": (ctypes.c_int, [c_vp, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_uint,
                                 ProgressCb, c_vp, ctypes.POINTER(ImportResult)]),
    "dynemb_drop_table": (ctypes.c_int, [c_vp, ctypes.c_char_p, c_u64_p]),
    # serving tables
    "dynemb_serve_load": (ctypes.c_int, [c_vp, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_uint,
                                     ProgressCb, c_vp, ctypes.POINTER(ServeResult)]),
    "dynemb_open_serving": (ctypes.c_int, [c_vp, ctypes.c_char_p, c_int_p]),
    "dynemb_serve_lookup": (ctypes.c_int, [c_vp, ctypes.c_int, c_vp, ctypes.c_size_t, c_vp,
                                       c_vp, c_u64_p]),
    "dynemb_serve_info": (ctypes.c_int, [c_vp, ctypes.c_int, ctypes.POINTER(ServeInfo)]),
    "dynemb_drop_table_flags": (ctypes.c_int, [c_vp, ctypes.c_char_p, ctypes.c_uint, c_u64_p]),
    "dynemb_status": (ctypes.c_int, [c_vp, ctypes.POINTER(Status)]),
    "dynemb_list_tables": (ctypes.c_int, [c_vp, ctypes.c_size_t, ctypes.POINTER(TableInfo),
                                          ctypes.c_size_t, ctypes.POINTER(ctypes.c_size_t),
                                          ctypes.POINTER(ctypes.c_size_t)]),
    "dynemb_stats_by_name": (ctypes.c_int, [c_vp, ctypes.c_char_p, ctypes.POINTER(Stats)]),
    "dynemb_op_stats": (ctypes.c_int, [c_vp, ctypes.POINTER(OpStat), ctypes.c_size_t,
                                       ctypes.POINTER(ctypes.c_size_t),
                                       ctypes.POINTER(WalStats)]),
    "dynemb_struct_size": (ctypes.c_size_t, [ctypes.c_char_p]),
    "dynemb_capabilities": (ctypes.c_uint64, [c_vp]),
}

# The C structs this package copies: each must have the library's size, else the two
# are from different versions of dynemb.h and every call through them would misread.
STRUCTS = {
    "dynemb_connect_opts": ConnectOpts, "dynemb_optim_spec": OptimSpec,
    "dynemb_admission_spec": AdmissionSpec, "dynemb_eviction_spec": EvictionSpec,
    "dynemb_durability_spec": DurabilitySpec, "dynemb_table_spec": TableSpec,
    "dynemb_stats": Stats, "dynemb_sample_spec": SampleSpec, "dynemb_progress": Progress,
    "dynemb_snapshot_result": SnapshotResult, "dynemb_import_result": ImportResult,
    "dynemb_status": Status, "dynemb_table_info": TableInfo,
    "dynemb_op_stat": OpStat, "dynemb_wal_stats": WalStats,
    "dynemb_serve_result": ServeResult, "dynemb_serve_info": ServeInfo,
}


def check_struct_sizes(lib, path):
    """ImportError naming the first struct whose size differs between lib and here."""
    for name, cls in STRUCTS.items():
        theirs, ours = lib.dynemb_struct_size(name.encode()), ctypes.sizeof(cls)
        if theirs != ours:
            raise ImportError(
                f"dynemb: struct {name} is {theirs} bytes in {path} but {ours} bytes in "
                f"this Python package ({__file__}): the library and the package come from "
                "different versions of dynemb.h; install matching ones"
                + (" (the library does not know this struct)" if theirs == 0 else ""))


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
        try:
            fn = getattr(lib, name)
        except AttributeError:
            raise ImportError(f"dynemb: {path} has no {name}: the library and this "
                              "Python package come from different versions") from None
        fn.restype, fn.argtypes = res, args
    check_struct_sizes(lib, path)
    return lib, path


class _Api:
    """The C functions, one attribute each (replaceable in tests)."""


lib, lib_path = load()
api = _Api()
for _name in _PROTOS:
    setattr(api, _name, getattr(lib, _name))
del _name
