/*
 * consumer.c: a program a user of the installed libdynemb would write, built by
 * tests/install/check_install.sh against a `meson install --destdir` tree through
 * `pkg-config --cflags --libs dynemb` alone. It connects to a socket that does not exist
 * and prints the library's text for the error it gets; the script checks that text.
 */
#include <dynemb.h>

#include <errno.h>
#include <stdio.h>

int main(void)
{
	dynemb_client *c = NULL;
	int rc = dynemb_connect("/nonexistent/dynemb-install-check.sock", NULL, &c);
	printf("%d %s\n", rc, dynemb_strerror(rc));
	return rc == -ENOENT ? 0 : 1;
}
