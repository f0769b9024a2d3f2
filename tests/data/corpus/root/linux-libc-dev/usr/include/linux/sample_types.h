/* SPDX-License-Identifier: GPL-2.0 WITH Linux-syscall-note */
#ifndef _LINUX_SAMPLE_TYPES_H
#define _LINUX_SAMPLE_TYPES_H

struct sample_pair {
	int first;	/* first member */
	int second;	/* second member */
};

#endif
