/*
 * test_numa.c — de_numa_choose on synthetic and XML hwloc topologies, de_numa_choose_local
 * and de_numa_bind on this machine.
 *
 * Expected nodes are worked out by hand from the topology strings (written next to each
 * assertion), never by calling the code under test a second time. Synthetic topologies
 * number PUs and NUMA nodes in depth-first order: "pack:2 [numa] core:2 pu:1" is
 * package 0 = {node 0, PUs 0-1}, package 1 = {node 1, PUs 2-3}.
 *
 * Memory tie-breaks need nodes of different sizes, which a synthetic description cannot
 * express (attributes apply to a whole level), so those tests export a synthetic topology
 * to XML, edit one node's local_memory (or os_index) and reload it.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <criterion/criterion.h>
#include <hwloc.h>
#include <numa.h>
#include <numaif.h>

#include "de_shm.h"

/* ---- helpers ----------------------------------------------------------- */

static hwloc_topology_t load_synthetic(const char *desc)
{
	hwloc_topology_t topo;

	cr_assert_eq(hwloc_topology_init(&topo), 0);
	cr_assert_eq(hwloc_topology_set_synthetic(topo, desc), 0, "bad synthetic: %s", desc);
	cr_assert_eq(hwloc_topology_load(topo), 0, "load failed: %s", desc);
	return topo;
}

static hwloc_topology_t load_xml(const char *xml)
{
	hwloc_topology_t topo;

	cr_assert_eq(hwloc_topology_init(&topo), 0);
	cr_assert_eq(hwloc_topology_set_xmlbuffer(topo, xml, (int)strlen(xml) + 1), 0);
	cr_assert_eq(hwloc_topology_load(topo), 0, "xml load failed");
	return topo;
}

/* Export a synthetic topology as an XML string (caller frees with free()). */
static char *synthetic_xml(const char *desc)
{
	hwloc_topology_t topo = load_synthetic(desc);
	char *buf = NULL, *copy;
	int len = 0;

	cr_assert_eq(hwloc_topology_export_xmlbuffer(topo, &buf, &len, 0), 0);
	copy = strdup(buf);
	cr_assert_not_null(copy);
	hwloc_free_xmlbuffer(topo, buf);
	hwloc_topology_destroy(topo);
	return copy;
}

/* Replace the nth (0-based) occurrence of `from` in s by `to`; s is freed, the result
 * returned. Fails the test when there is no such occurrence. */
static char *replace_nth(char *s, const char *from, const char *to, int nth)
{
	char *p = s, *out;
	size_t flen = strlen(from), tlen = strlen(to), pre;

	for (int i = 0;; i++) {
		p = strstr(p, from);
		cr_assert_not_null(p, "occurrence %d of '%s' not found", nth, from);
		if (i == nth)
			break;
		p += flen;
	}
	pre = (size_t)(p - s);
	out = malloc(strlen(s) - flen + tlen + 1);
	cr_assert_not_null(out);
	memcpy(out, s, pre);
	memcpy(out + pre, to, tlen);
	strcpy(out + pre + tlen, p + flen);
	free(s);
	return out;
}

/* Choose for the PUs listed in `list` (hwloc list syntax, e.g. "1-3"; NULL = pass NULL). */
static int choose_list(hwloc_topology_t topo, const char *list)
{
	hwloc_bitmap_t set = NULL;
	int node = -100, ret;

	if (list) {
		set = hwloc_bitmap_alloc();
		cr_assert_not_null(set);
		cr_assert_eq(hwloc_bitmap_list_sscanf(set, list), 0, "bad list %s", list);
	}
	ret = de_numa_choose(topo, set, &node);
	hwloc_bitmap_free(set);
	cr_assert_eq(ret, 0, "de_numa_choose(%s) = %d", list ? list : "NULL", ret);
	return node;
}

/* ---- de_numa_choose: synthetic ----------------------------------------- */

Test(numa_choose, two_packages)
{
	/* pkg0 = node 0 {PU 0,1}; pkg1 = node 1 {PU 2,3}; no memory sizes (both 0). */
	hwloc_topology_t topo = load_synthetic("pack:2 [numa] core:2 pu:1");

	cr_expect_eq(choose_list(topo, "0"), 0);
	cr_expect_eq(choose_list(topo, "1"), 0);
	cr_expect_eq(choose_list(topo, "0-1"), 0);
	cr_expect_eq(choose_list(topo, "2"), 1);
	cr_expect_eq(choose_list(topo, "2-3"), 1);
	/* Straddling unevenly: {1,2,3} = 1 PU on node 0, 2 on node 1 -> 1. */
	cr_expect_eq(choose_list(topo, "1-3"), 1);
	/* {0,1,3} = 2 on node 0, 1 on node 1 -> 0. */
	cr_expect_eq(choose_list(topo, "0,1,3"), 0);
	/* Straddling evenly, equal memory: lower OS index. */
	cr_expect_eq(choose_list(topo, "1-2"), 0);
	/* NULL and empty = whole machine: 2 vs 2, equal memory -> 0. */
	cr_expect_eq(choose_list(topo, NULL), 0);
	cr_expect_eq(choose_list(topo, ""), 0);
	/* PUs the topology does not have overlap no node: all tie at 0 -> node 0. */
	cr_expect_eq(choose_list(topo, "100"), 0);
	hwloc_topology_destroy(topo);
}

Test(numa_choose, four_packages_smt)
{
	/* pkg i = node i, PUs 4i..4i+3 (2 cores x 2 PUs). */
	hwloc_topology_t topo = load_synthetic("pack:4 [numa] core:2 pu:2");

	cr_expect_eq(choose_list(topo, "0"), 0);
	cr_expect_eq(choose_list(topo, "5"), 1);
	cr_expect_eq(choose_list(topo, "8-11"), 2);
	cr_expect_eq(choose_list(topo, "15"), 3);
	cr_expect_eq(choose_list(topo, "12-15"), 3);
	/* {3} u {4,5,6}: 1 on node 0, 3 on node 1 -> 1. */
	cr_expect_eq(choose_list(topo, "3-6"), 1);
	/* {6,7} u {8,9,10}: 2 on node 1, 3 on node 2 -> 2. */
	cr_expect_eq(choose_list(topo, "6-10"), 2);
	/* {0} u {4,5} u {12,13,14}: 1, 2, 0, 3 -> 3. */
	cr_expect_eq(choose_list(topo, "0,4-5,12-14"), 3);
	/* {2,3} u {14,15}: tie between 0 and 3, equal memory -> 0. */
	cr_expect_eq(choose_list(topo, "2-3,14-15"), 0);
	/* {9} u {13}: tie between 2 and 3 -> 2. */
	cr_expect_eq(choose_list(topo, "9,13"), 2);
	cr_expect_eq(choose_list(topo, NULL), 0);
	cr_expect_eq(choose_list(topo, ""), 0);
	hwloc_topology_destroy(topo);
}

Test(numa_choose, no_numa_annotation)
{
	/* hwloc inserts a single machine-wide node, P#0, local to every PU. */
	hwloc_topology_t topo = load_synthetic("pack:2 core:2 pu:1");

	cr_assert_eq(hwloc_get_nbobjs_by_type(topo, HWLOC_OBJ_NUMANODE), 1);
	cr_expect_eq(choose_list(topo, "0"), 0);
	cr_expect_eq(choose_list(topo, "3"), 0);
	cr_expect_eq(choose_list(topo, "1-2"), 0);
	cr_expect_eq(choose_list(topo, NULL), 0);
	hwloc_topology_destroy(topo);
}

Test(numa_choose, numa_below_package)
{
	/* Sub-NUMA clustering: pkg p has nodes 2p, 2p+1, each local to one core of 2 PUs.
	 * pkg0: node0 {0,1}, node1 {2,3}; pkg1: node2 {4,5}, node3 {6,7}. */
	hwloc_topology_t topo = load_synthetic("pack:2 group:2 [numa] core:1 pu:2");

	cr_assert_eq(hwloc_get_nbobjs_by_type(topo, HWLOC_OBJ_NUMANODE), 4);
	cr_expect_eq(choose_list(topo, "0-1"), 0);
	cr_expect_eq(choose_list(topo, "3"), 1);
	cr_expect_eq(choose_list(topo, "0-3"), 0); /* 2 vs 2: lower index */
	cr_expect_eq(choose_list(topo, "1-3"), 1); /* 1 vs 2 */
	cr_expect_eq(choose_list(topo, "5-7"), 3); /* node2: 1, node3: 2 */
	hwloc_topology_destroy(topo);
}

/* ---- de_numa_choose: XML-edited topologies ----------------------------- */

Test(numa_choose, memory_breaks_ties)
{
	/* Both nodes 1000000 bytes; make node 1 (the second NUMANode in the XML) bigger. */
	char *xml = synthetic_xml("pack:2 [numa(memory=1000000)] core:2 pu:1");
	hwloc_topology_t topo;
	hwloc_obj_t n1;

	xml = replace_nth(xml, "local_memory=\"1000000\"", "local_memory=\"2000000\"", 1);
	topo = load_xml(xml);
	n1 = hwloc_get_numanode_obj_by_os_index(topo, 1);
	cr_assert_not_null(n1);
	cr_assert_eq(n1->attr->numanode.local_memory, 2000000);

	/* Even overlap {1} vs {2}: node 1 has more memory. */
	cr_expect_eq(choose_list(topo, "1-2"), 1);
	/* Whole machine: 2 vs 2, memory -> 1. */
	cr_expect_eq(choose_list(topo, NULL), 1);
	cr_expect_eq(choose_list(topo, ""), 1);
	/* Overlap still beats memory: {0,1,2} = 2 vs 1 -> 0; {0} -> 0. */
	cr_expect_eq(choose_list(topo, "0-2"), 0);
	cr_expect_eq(choose_list(topo, "0"), 0);
	hwloc_topology_destroy(topo);
	free(xml);
}

Test(numa_choose, memory_tie_first_node_bigger)
{
	char *xml = synthetic_xml("pack:2 [numa(memory=1000000)] core:2 pu:1");
	hwloc_topology_t topo;

	xml = replace_nth(xml, "local_memory=\"1000000\"", "local_memory=\"5000000\"", 0);
	topo = load_xml(xml);
	cr_expect_eq(choose_list(topo, "1-2"), 0);
	cr_expect_eq(choose_list(topo, NULL), 0);
	cr_expect_eq(choose_list(topo, "3"), 1); /* overlap first */
	hwloc_topology_destroy(topo);
	free(xml);
}

Test(numa_choose, os_index_breaks_ties_not_tree_order)
{
	/* Renumber the first node (tree order) to OS index 5; equal memory. A tie must go
	 * to OS index 1 (the second node in the tree), not to the first one found. */
	char *xml = synthetic_xml("pack:2 [numa(memory=1000000)] core:2 pu:1");
	hwloc_topology_t topo;

	xml = replace_nth(xml, "type=\"NUMANode\" os_index=\"0\"",
			  "type=\"NUMANode\" os_index=\"5\"", 0);
	topo = load_xml(xml);
	cr_assert_not_null(hwloc_get_numanode_obj_by_os_index(topo, 5));
	cr_expect_eq(choose_list(topo, "1-2"), 1);
	cr_expect_eq(choose_list(topo, NULL), 1);
	cr_expect_eq(choose_list(topo, "0-1"), 5);
	cr_expect_eq(choose_list(topo, "0-2"), 5);
	hwloc_topology_destroy(topo);
	free(xml);
}

Test(numa_choose, bad_args)
{
	hwloc_topology_t topo = load_synthetic("pack:2 [numa] core:2 pu:1");
	int node = 42;

	cr_expect_eq(de_numa_choose(NULL, NULL, &node), -EINVAL);
	cr_expect_eq(de_numa_choose(topo, NULL, NULL), -EINVAL);
	cr_expect_eq(node, 42, "out-value written on error");
	cr_expect_eq(de_numa_choose_local(NULL), -EINVAL);
	hwloc_topology_destroy(topo);
	/* -ENOENT (no NUMA node) cannot be reached through hwloc 2: every loaded topology
	 * has at least one node (hwloc inserts one, or refuses to load an XML without). */
}

/* ---- this machine ------------------------------------------------------ */

static bool node_exists(int node)
{
	char path[64];

	snprintf(path, sizeof(path), "/sys/devices/system/node/node%d", node);
	return access(path, F_OK) == 0;
}

Test(numa_local, choose_local_gives_a_real_node)
{
	int node = -100;

	cr_assert_eq(de_numa_choose_local(&node), 0);
	cr_expect_geq(node, 0);
	if (access("/sys/devices/system/node", F_OK) == 0)
		cr_expect(node_exists(node), "node %d not in sysfs", node);
}

Test(numa_local, choose_local_follows_binding)
{
	/* Bind this thread to its first allowed cpu; the choice must be a node local to it
	 * (on a one-node machine: that node). Criterion runs each test in its own process,
	 * so the binding does not leak into other tests. */
	hwloc_topology_t topo;
	hwloc_bitmap_t set = hwloc_bitmap_alloc(), nodes = hwloc_bitmap_alloc();
	hwloc_obj_t pu;
	int node = -100, first;

	cr_assert_eq(hwloc_topology_init(&topo), 0);
	cr_assert_eq(hwloc_topology_load(topo), 0);
	cr_assert_eq(hwloc_get_cpubind(topo, set, HWLOC_CPUBIND_THREAD), 0);
	first = hwloc_bitmap_first(set);
	cr_assert_geq(first, 0);
	hwloc_bitmap_only(set, (unsigned)first);
	cr_assert_eq(hwloc_set_cpubind(topo, set, HWLOC_CPUBIND_THREAD), 0);
	pu = hwloc_get_pu_obj_by_os_index(topo, (unsigned)first);
	cr_assert_not_null(pu);

	cr_assert_eq(de_numa_choose_local(&node), 0);
	/* The PU's nodeset lists the nodes local to it. */
	hwloc_bitmap_copy(nodes, pu->nodeset);
	cr_expect(hwloc_bitmap_isset(nodes, (unsigned)node), "node %d not local to PU %d", node,
		  first);
	hwloc_bitmap_free(nodes);
	hwloc_bitmap_free(set);
	hwloc_topology_destroy(topo);
}

/* ---- de_numa_bind ------------------------------------------------------ */

#define BIND_BYTES (4u << 20)

static void skip_without_numa(void)
{
	if (numa_available() < 0)
		cr_skip_test("libnuma: numa_available() < 0 (kernel without NUMA support)");
}

/* Node of the page at p (faulted in already), via get_mempolicy. */
static int page_node(void *p)
{
	int node = -1;

	cr_assert_eq(get_mempolicy(&node, NULL, 0, p, MPOL_F_NODE | MPOL_F_ADDR), 0,
		     "get_mempolicy: %s", strerror(errno));
	return node;
}

static void check_bound_to_0(char *p)
{
	unsigned long mask[16] = {0};
	int mode = -1;

	cr_assert_eq(de_numa_bind(p, BIND_BYTES, 0), 0);
	memset(p, 0xa5, BIND_BYTES);
	cr_expect_eq(page_node(p), 0);
	cr_expect_eq(page_node(p + BIND_BYTES / 2), 0);
	cr_expect_eq(page_node(p + BIND_BYTES - 4096), 0);
	cr_assert_eq(get_mempolicy(&mode, mask, sizeof(mask) * 8, p, MPOL_F_ADDR), 0);
	cr_expect_eq(mode, MPOL_BIND);
	cr_expect_eq(mask[0], 1ul, "policy nodemask %#lx", mask[0]);
}

Test(numa_bind, anonymous_to_node0)
{
	char *p;

	skip_without_numa();
	p = mmap(NULL, BIND_BYTES, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	cr_assert_neq(p, MAP_FAILED);
	check_bound_to_0(p);
	munmap(p, BIND_BYTES);
}

Test(numa_bind, shared_memfd_to_node0)
{
	/* The arena's case: a shared shmem mapping of a memfd. */
	int fd;
	char *p;

	skip_without_numa();
	fd = memfd_create("test_numa", MFD_CLOEXEC);
	cr_assert_geq(fd, 0);
	cr_assert_eq(ftruncate(fd, BIND_BYTES), 0);
	p = mmap(NULL, BIND_BYTES, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	cr_assert_neq(p, MAP_FAILED);
	check_bound_to_0(p);
	munmap(p, BIND_BYTES);
	close(fd);
}

Test(numa_bind, bad_nodes_and_ranges)
{
	char *p;

	skip_without_numa();
	p = mmap(NULL, BIND_BYTES, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	cr_assert_neq(p, MAP_FAILED);
	cr_expect_eq(de_numa_bind(p, BIND_BYTES, 999), -EINVAL);
	cr_expect_eq(de_numa_bind(p, BIND_BYTES, numa_max_node() + 1), -EINVAL);
	cr_expect_eq(de_numa_bind(p, BIND_BYTES, -1), -EINVAL);
	cr_expect_eq(de_numa_bind(p, BIND_BYTES, DE_NUMA_NONE), -EINVAL);
	cr_expect_eq(de_numa_bind(p, BIND_BYTES, 1 << 20), -EINVAL);
	/* The kernel's own check comes back as -errno: a start that is not page aligned. */
	cr_expect_eq(de_numa_bind(p + 1, 4096, 0), -EINVAL);
	cr_expect_eq(de_numa_bind(NULL, 4096, 0), -EINVAL);
	munmap(p, BIND_BYTES);
}
