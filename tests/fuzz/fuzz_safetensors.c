/*
 * libFuzzer target: the safetensors structure check of deep verify (cache/safetensors.c). The
 * input is a whole small file: the length prefix and header are checked against its size, the
 * way verify reads a real file. Any answer is fine; crashes, leaks and UB are not.
 */
#include "safetensors.h"

#include <stddef.h>
#include <stdint.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct mc_safetensors_report r;
	uint64_t header_len = 0;

	if (mc_safetensors_check_prefix(data, size, size, &header_len, &r) == 0 &&
	    header_len <= size - 8)
		mc_safetensors_check(data + 8, (size_t)header_len, size, &r);
	return 0;
}
