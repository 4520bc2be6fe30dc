/*
 * manifest: the YAML list of models that `mcache prewarm` pulls and `mcache init` materialises
 * (MCACHE_MANIFEST). Parsed with libyaml; every problem is an MC_E_USAGE error naming the file
 * and line. The format (README.md, mcache.1):
 *
 *   models:
 *     - name: llama-8b
 *       uri: s3://models/llama-3-8b/        # or a list of URIs
 *       revision: main                       # optional, hf:// only
 *       include: ["*.safetensors", "*.json"] # optional (a string or a list)
 *       exclude: ["*.bin"]                   # optional
 *       pin: true                            # optional
 *       priority: 10                         # optional, higher first
 *
 * Unknown keys, duplicate keys or names, wrong types and bad values are errors.
 */
#ifndef MC_MANIFEST_H
#define MC_MANIFEST_H

#include <stdbool.h>
#include <stddef.h>

#include "mc_err.h"

/* A manifest file larger than this is refused: it lists models, not their bytes. */
#define MC_MANIFEST_MAX_BYTES (1u << 20)

struct mc_manifest_model {
	char *name;
	/* The URIs to pull; an hf:// URI without '@' carries the model's revision appended. */
	char **uri;
	size_t nuri;
	char *revision; /* NULL when absent */
	char **include;
	size_t ninclude;
	char **exclude;
	size_t nexclude;
	bool pin;
	long priority;
	unsigned line; /* where the entry starts, 1-based */
};

struct mc_manifest {
	struct mc_manifest_model *model; /* in the order of the file */
	size_t n;
};

/* Parses @len bytes of YAML; @label names the source in messages. */
int mc_manifest_parse(const char *text, size_t len, const char *label, struct mc_manifest *out,
		      struct mc_err *err);

/* Reads and parses the file at @path ("-" reads standard input). */
int mc_manifest_load(const char *path, struct mc_manifest *out, struct mc_err *err);

/* Orders the models by priority, highest first; equal priorities keep the file's order. */
void mc_manifest_sort(struct mc_manifest *m);

void mc_manifest_free(struct mc_manifest *m);

#endif
