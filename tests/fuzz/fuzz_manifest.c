/*
 * libFuzzer target: the models manifest parser (manifest/manifest.c, libyaml). Valid or not,
 * every input must return cleanly and free everything it allocated.
 */
#include "mc_manifest.h"

#include <stddef.h>
#include <stdint.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct mc_manifest m;
	struct mc_err err;

	mc_err_init(&err);
	if (mc_manifest_parse((const char *)data, size, "fuzz.yaml", &m, &err) == 0) {
		mc_manifest_sort(&m);
		mc_manifest_free(&m);
	}
	return 0;
}
