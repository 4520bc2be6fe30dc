/*
 * The structure of a safetensors file, as deep verify checks it (safetensors.c). Internal to
 * cache/ and its tests; the checks are pure functions of a buffer and the file's size, so that a
 * unit test (and a fuzzer) can drive them without files.
 *
 * A safetensors file is: 8 bytes, the little-endian length N of the header; N bytes of header, a
 * UTF-8 JSON object; then the data section, every byte of which belongs to exactly one tensor.
 */
#ifndef MC_SAFETENSORS_H
#define MC_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

/* The largest header the reference implementation reads (its MAX_HEADER_SIZE). */
#define MC_SAFETENSORS_HEADER_MAX 100000000u

/* What is wrong with a malformed file: what the format wants and what the file has. */
struct mc_safetensors_report {
	char expected[200];
	char actual[200];
};

/*
 * Checks the first @len bytes of a file of @file_size bytes (at least the 8-byte length prefix
 * when the file has them) and sets *header_len. Returns 0, or MC_E_INTEGRITY with @r filled when
 * the file is shorter than 8 bytes or the length is 100 MB or more, or runs past the end.
 */
int mc_safetensors_check_prefix(const uint8_t *buf, size_t len, uint64_t file_size,
				uint64_t *header_len, struct mc_safetensors_report *r);

/*
 * Checks the header @header[0..len) (the bytes after the prefix) of a file of @file_size bytes:
 * one UTF-8 JSON object without duplicate keys; "__metadata__", if present, an object of
 * strings (or null); every other key a tensor {"dtype", "shape", "data_offsets"} with a known
 * dtype, a shape of non-negative integers and offsets [begin, end] whose span is the shape's
 * element count times the dtype's size (whole bytes); the spans, sorted, start at 0, touch
 * without gap or overlap and end exactly at the end of the file. Returns 0 for a valid header,
 * MC_E_INTEGRITY with @r filled for the first problem found, or -ENOMEM.
 */
int mc_safetensors_check(const uint8_t *header, size_t len, uint64_t file_size,
			 struct mc_safetensors_report *r);

/*
 * Reads the prefix and the header of the open file @fd of @file_size bytes (pread, no more than
 * the header) and checks them as above. Returns 0, MC_E_INTEGRITY with @r filled, -ENOMEM, or
 * -errno when the file cannot be read (-ENODATA when it ends inside the header although
 * @file_size says it is longer: only the header is read).
 */
int mc_safetensors_check_fd(int fd, uint64_t file_size, struct mc_safetensors_report *r);

#endif
