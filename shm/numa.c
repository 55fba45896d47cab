/*
 * numa.c — choosing a NUMA node for arena memory and binding memory to it.
 *
 * What it owns: nothing that outlives a call. de_numa_choose reads a topology the
 * caller owns (and keeps); de_numa_choose_local loads, uses and destroys its own
 * topology within the call; de_numa_bind sets a memory policy on a range the caller
 * owns. No global mutable state: every call is independent and thread-safe as far as
 * hwloc and libnuma are (a topology must not be modified while it is read here).
 *
 * Also de_arena_create: the arena with placement, over de_arena_create_placed
 * (shm/arena.c): it resolves DE_NUMA_AUTO (choose_local) and gives the arena de_numa_bind
 * for each new segment before its first touch. This file is libdeshm_place, the only one
 * of shm/ that links hwloc and libnuma: the daemon and the tests link it, libdynemb does
 * not (it only attaches arenas read-only).
 *
 * Callers: the daemon and tests that create arenas (de_arena_create); tools and tests
 * with synthetic topologies (de_numa_choose).
 *
 * What it must never do:
 *   - bind the calling thread or process (no hwloc_set_cpubind / numa_run_on_node /
 *     set_mempolicy): placement of threads is the caller's business; we only set the
 *     policy of a memory range, with mbind;
 *   - touch the memory it binds (binding happens before first touch; touching here
 *     would fault pages in under the old policy);
 *   - print or exit: libnuma helpers that warn or abort on failure are avoided, errors
 *     come back as negative errno;
 *   - keep a topology in a static: loading one costs milliseconds, and callers that
 *     need it repeatedly pass their own to de_numa_choose.
 *
 * The choice rule (de_numa_choose): among the NUMA nodes of the topology, the one whose
 * locality cpuset (in hwloc 2 a NUMA node is a memory child; its cpuset is the cpus it
 * is local to) shares the most PUs with `cpus`; ties go to the node with more local
 * memory, then to the lower OS index. NULL or empty `cpus` means the whole machine
 * (every node then scores its own locality size).
 */
#include <errno.h>
#include <limits.h>
#include <string.h>

#include <hwloc.h>
#include <numa.h>
#include <numaif.h>

#include "de_shm.h"

/* Largest node count the kernel can be built with (NODES_SHIFT <= 10); bounds the
 * nodemask we hand to mbind so it can live on the stack. */
#define NUMA_MAX_NODES 1024
#define BITS_PER_ULONG (CHAR_BIT * sizeof(unsigned long))

/* Is candidate (score, mem, os) better than the best so far? */
static int better(int score, uint64_t mem, unsigned os, int best_score, uint64_t best_mem,
		  unsigned best_os)
{
	if (score != best_score)
		return score > best_score;
	if (mem != best_mem)
		return mem > best_mem;
	return os < best_os;
}

int de_numa_choose(hwloc_topology_t topo, hwloc_const_cpuset_t cpus, int *node /* out */)
{
	hwloc_bitmap_t inter = NULL;
	hwloc_const_cpuset_t want;
	hwloc_obj_t obj = NULL;
	int best_score = -1;
	uint64_t best_mem = 0;
	unsigned best_os = UINT_MAX;
	int found = 0;
	int ret;

	if (!topo || !node)
		return -EINVAL;

	/* NULL or empty: the whole machine (the root's cpuset covers every PU). */
	want = cpus;
	if (!want || hwloc_bitmap_iszero(want))
		want = hwloc_get_root_obj(topo)->cpuset;

	inter = hwloc_bitmap_alloc();
	if (!inter)
		return -ENOMEM;

	while ((obj = hwloc_get_next_obj_by_type(topo, HWLOC_OBJ_NUMANODE, obj)) != NULL) {
		int score = 0;
		uint64_t mem = obj->attr ? obj->attr->numanode.local_memory : 0;

		if (obj->cpuset && want) {
			if (hwloc_bitmap_and(inter, obj->cpuset, want) < 0) {
				ret = -ENOMEM;
				goto out;
			}
			score = hwloc_bitmap_weight(inter);
			if (score < 0) /* infinite: cannot happen for a node's finite set */
				score = INT_MAX;
		}
		if (!found || better(score, mem, obj->os_index, best_score, best_mem, best_os)) {
			best_score = score;
			best_mem = mem;
			best_os = obj->os_index;
			found = 1;
		}
	}

	if (!found) {
		ret = -ENOENT;
		goto out;
	}
	if (best_os > (unsigned)INT_MAX) {
		ret = -ERANGE; /* an os_index no int can hold: not a real node */
		goto out;
	}
	*node = (int)best_os;
	ret = 0;
out:
	hwloc_bitmap_free(inter);
	return ret;
}

int de_numa_choose_local(int *node /* out */)
{
	hwloc_topology_t topo;
	hwloc_bitmap_t set = NULL;
	hwloc_const_cpuset_t cpus = NULL;
	int ret;

	if (!node)
		return -EINVAL;
	if (hwloc_topology_init(&topo) < 0)
		return errno ? -errno : -ENOMEM;
	if (hwloc_topology_load(topo) < 0) {
		ret = errno ? -errno : -EIO;
		goto out;
	}

	/* The thread's binding; when it cannot be read, the whole machine (cpus = NULL). */
	set = hwloc_bitmap_alloc();
	if (!set) {
		ret = -ENOMEM;
		goto out;
	}
	if (hwloc_get_cpubind(topo, set, HWLOC_CPUBIND_THREAD) == 0)
		cpus = set;

	ret = de_numa_choose(topo, cpus, node);
out:
	hwloc_bitmap_free(set);
	hwloc_topology_destroy(topo);
	return ret;
}

int de_numa_bind(void *addr, size_t len, int node)
{
	unsigned long mask[NUMA_MAX_NODES / BITS_PER_ULONG];

	if (numa_available() < 0)
		return -ENOSYS;
	if (node < 0 || node >= NUMA_MAX_NODES || node > numa_max_node())
		return -EINVAL;
	if (!addr && len)
		return -EINVAL;

	/*
	 * mbind rather than numa_tonode_memory: the latter reports failure only through
	 * numa_error (a warning on stderr) and loses errno. maxnode is one more than the
	 * bits we pass: the kernel's get_nodes() decrements it before reading the mask.
	 */
	memset(mask, 0, sizeof(mask));
	mask[(unsigned)node / BITS_PER_ULONG] |= 1UL << ((unsigned)node % BITS_PER_ULONG);
	if (mbind(addr, len, MPOL_BIND, mask, (unsigned long)node + 2, 0) < 0)
		return -errno;
	return 0;
}

int de_arena_create(const struct de_arena_config *cfg, de_arena **out)
{
	int node = DE_NUMA_NONE;
	if (cfg && cfg->numa_node == DE_NUMA_AUTO) {
		if (de_numa_choose_local(&node) != 0)
			node = DE_NUMA_NONE; /* no topology: leave placement to the kernel */
	} else if (cfg && cfg->numa_node >= 0) {
		node = cfg->numa_node;
	}
	return de_arena_create_placed(cfg, node, de_numa_bind, out);
}
