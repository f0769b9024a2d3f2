/* Copyright (C) 1991-2022 Free Software Foundation, Inc.
   This file is part of the GNU C Library.
   The GNU C Library is free software; see the GNU Lesser General Public License.  */

#ifndef _SYS_SAMPLE_H
#define _SYS_SAMPLE_H 1

/* Return the larger of A and B.  */
extern int sample_max (int __a, int __b);



#endif /* sys/sample.h */
