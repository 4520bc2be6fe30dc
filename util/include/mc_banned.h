/*
 * Functions that are too easy to misuse; included last by every .c file (git's banned.h).
 * Use snprintf, memcpy with an explicit length, and strtoull/mc_parse_* instead.
 */
#ifndef MC_BANNED_H
#define MC_BANNED_H

#define MC_BANNED(func) sorry_##func##_is_banned_in_mcache

#undef strcpy
#define strcpy(x, y) MC_BANNED(strcpy)
#undef strcat
#define strcat(x, y) MC_BANNED(strcat)
#undef strncpy
#define strncpy(x, y, n) MC_BANNED(strncpy)
#undef sprintf
#define sprintf(...) MC_BANNED(sprintf)
#undef vsprintf
#define vsprintf(...) MC_BANNED(vsprintf)
#undef gets
#define gets(x) MC_BANNED(gets)
#undef atoi
#define atoi(x) MC_BANNED(atoi)
#undef atol
#define atol(x) MC_BANNED(atol)

#endif
