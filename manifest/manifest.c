/*
 * The models manifest, parsed with libyaml's document API: the whole file is loaded into a node
 * graph (it is small: MC_MANIFEST_MAX_BYTES), then walked with types checked at every step, so
 * that each error names the line of the node at fault.
 */
#include "mc_manifest.h"

#include "mc_alloc.h"
#include "mc_util.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <yaml.h>

#include "mc_banned.h"

/* Limits that keep a hostile manifest from costing more than a small one. */
#define MAX_MODELS 4096
#define MAX_LIST   1024
#define MAX_STRING 8192

struct ctx {
	yaml_document_t *doc;
	const char *label;
	struct mc_err *err;
};

static unsigned line_of(const yaml_node_t *n)
{
	return (unsigned)n->start_mark.line + 1;
}

static int bad(struct ctx *x, const yaml_node_t *n, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int bad(struct ctx *x, const yaml_node_t *n, const char *fmt, ...)
{
	char what[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(what, sizeof(what), fmt, ap);
	va_end(ap);
	return mc_err_set(x->err, MC_E_USAGE, "manifest '%s' line %u: %s", x->label,
			  n ? line_of(n) : 1, what);
}

static int oom(struct ctx *x)
{
	return mc_err_set(x->err, -ENOMEM, "out of memory");
}

static bool is_scalar(const yaml_node_t *n)
{
	return n && n->type == YAML_SCALAR_NODE;
}

static const char *scalar(const yaml_node_t *n)
{
	return (const char *)n->data.scalar.value;
}

/* A plain or quoted string of printable characters, within bounds. */
static int get_string(struct ctx *x, const yaml_node_t *n, const char *key, char **out)
{
	const char *s;

	if (!is_scalar(n))
		return bad(x, n, "'%s' must be a string", key);
	s = scalar(n);
	if (n->data.scalar.length == 0 || n->data.scalar.length > MAX_STRING ||
	    strlen(s) != n->data.scalar.length)
		return bad(x, n, "'%s' must be a non-empty string of at most %d bytes", key,
			   MAX_STRING);
	for (const unsigned char *p = (const unsigned char *)s; *p; p++)
		if (*p < 0x20 || *p == 0x7f)
			return bad(x, n, "'%s' contains a control character", key);
	*out = mc_strdup(s);
	return *out ? 0 : oom(x);
}

/* A string or a sequence of strings. */
static int get_list(struct ctx *x, const yaml_node_t *n, const char *key, char ***out,
		    size_t *count)
{
	yaml_node_item_t *it;
	size_t len;
	int ret;

	if (is_scalar(n)) {
		*out = mc_calloc(1, sizeof(**out));
		if (!*out)
			return oom(x);
		*count = 1;
		return get_string(x, n, key, &(*out)[0]);
	}
	if (!n || n->type != YAML_SEQUENCE_NODE)
		return bad(x, n, "'%s' must be a string or a list of strings", key);
	len = (size_t)(n->data.sequence.items.top - n->data.sequence.items.start);
	if (len == 0 || len > MAX_LIST)
		return bad(x, n, "'%s' must list 1 to %d strings", key, MAX_LIST);
	*out = mc_calloc(len, sizeof(**out));
	if (!*out)
		return oom(x);
	*count = len;
	it = n->data.sequence.items.start;
	for (size_t i = 0; i < len; i++) {
		ret = get_string(x, yaml_document_get_node(x->doc, it[i]), key, &(*out)[i]);
		if (ret)
			return ret;
	}
	return 0;
}

static int get_bool(struct ctx *x, const yaml_node_t *n, const char *key, bool *out)
{
	if (is_scalar(n) && n->data.scalar.style == YAML_PLAIN_SCALAR_STYLE) {
		if (!strcmp(scalar(n), "true")) {
			*out = true;
			return 0;
		}
		if (!strcmp(scalar(n), "false")) {
			*out = false;
			return 0;
		}
	}
	return bad(x, n, "'%s' must be true or false", key);
}

static int get_long(struct ctx *x, const yaml_node_t *n, const char *key, long *out)
{
	char *end;
	long v;

	if (!is_scalar(n) || n->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
		return bad(x, n, "'%s' must be an integer", key);
	errno = 0;
	v = strtol(scalar(n), &end, 10);
	if (errno || end == scalar(n) || *end || v < -1000000 || v > 1000000)
		return bad(x, n,
			   "'%s' must be an integer between -1000000 and 1000000, not '%.40s'", key,
			   scalar(n));
	*out = v;
	return 0;
}

static void free_list(char **l, size_t n)
{
	for (size_t i = 0; l && i < n; i++)
		mc_free(l[i]);
	mc_free(l);
}

static void model_free(struct mc_manifest_model *m)
{
	mc_free(m->name);
	free_list(m->uri, m->nuri);
	mc_free(m->revision);
	free_list(m->include, m->ninclude);
	free_list(m->exclude, m->nexclude);
	memset(m, 0, sizeof(*m));
}

/* hf:// URIs without a revision of their own get the model's; others refuse one. */
static int apply_revision(struct ctx *x, const yaml_node_t *n, struct mc_manifest_model *m)
{
	for (size_t i = 0; i < m->nuri; i++) {
		char *u = m->uri[i], *with;
		size_t len;

		if (strncmp(u, "hf://", 5))
			return bad(x, n, "'revision' applies to hf:// URIs only, not '%.200s'", u);
		if (strchr(u + 5, '@'))
			return bad(x, n, "'%.200s' names its own revision and 'revision' another",
				   u);
		len = strlen(u) + 1 + strlen(m->revision) + 1;
		with = mc_malloc(len);
		if (!with)
			return oom(x);
		snprintf(with, len, "%s@%s", u, m->revision);
		mc_free(u);
		m->uri[i] = with;
	}
	return 0;
}

static int parse_model(struct ctx *x, const yaml_node_t *n, struct mc_manifest_model *m)
{
	yaml_node_pair_t *p;
	unsigned seen = 0;
	int ret = 0;

	if (!n || n->type != YAML_MAPPING_NODE)
		return bad(x, n, "a model must be a mapping with 'name' and 'uri'");
	m->line = line_of(n);
	for (p = n->data.mapping.pairs.start; p < n->data.mapping.pairs.top; p++) {
		static const char *const keys[] = {"name",    "uri", "revision", "include",
						   "exclude", "pin", "priority"};
		yaml_node_t *k = yaml_document_get_node(x->doc, p->key);
		yaml_node_t *v = yaml_document_get_node(x->doc, p->value);
		size_t i;

		if (!is_scalar(k))
			return bad(x, k, "a key must be a string");
		for (i = 0; i < sizeof(keys) / sizeof(keys[0]); i++)
			if (!strcmp(scalar(k), keys[i]))
				break;
		if (i == sizeof(keys) / sizeof(keys[0]))
			return bad(x, k,
				   "unknown key '%.60s' (known: name, uri, revision, include, "
				   "exclude, pin, priority)",
				   scalar(k));
		if (seen & (1u << i))
			return bad(x, k, "'%s' given twice", keys[i]);
		seen |= 1u << i;
		switch (i) {
		case 0:
			ret = get_string(x, v, "name", &m->name);
			if (!ret && !mc_name_is_valid(m->name))
				ret =
				    bad(x, v,
					"invalid model name '%.200s': use 1-128 of [A-Za-z0-9._-], "
					"not starting with '.' or '-'",
					m->name);
			break;
		case 1:
			ret = get_list(x, v, "uri", &m->uri, &m->nuri);
			break;
		case 2:
			ret = get_string(x, v, "revision", &m->revision);
			break;
		case 3:
			ret = get_list(x, v, "include", &m->include, &m->ninclude);
			break;
		case 4:
			ret = get_list(x, v, "exclude", &m->exclude, &m->nexclude);
			break;
		case 5:
			ret = get_bool(x, v, "pin", &m->pin);
			break;
		default:
			ret = get_long(x, v, "priority", &m->priority);
			break;
		}
		if (ret)
			return ret;
	}
	if (!m->name)
		return bad(x, n, "a model needs a 'name'");
	if (!m->uri)
		return bad(x, n, "model '%s' needs a 'uri'", m->name);
	if (m->revision)
		ret = apply_revision(x, n, m);
	return ret;
}

static int parse_root(struct ctx *x, struct mc_manifest *out)
{
	yaml_node_t *root = yaml_document_get_root_node(x->doc), *models = NULL;
	yaml_node_item_t *it;
	yaml_node_pair_t *p;
	size_t len;
	int ret;

	if (!root)
		return bad(x, NULL, "empty manifest: expected 'models:' with a list of models");
	if (root->type != YAML_MAPPING_NODE)
		return bad(x, root, "expected a mapping with 'models:' at the top");
	for (p = root->data.mapping.pairs.start; p < root->data.mapping.pairs.top; p++) {
		yaml_node_t *k = yaml_document_get_node(x->doc, p->key);

		if (!is_scalar(k) || strcmp(scalar(k), "models"))
			return bad(x, k, "unknown top-level key '%.60s' (known: models)",
				   is_scalar(k) ? scalar(k) : "?");
		if (models)
			return bad(x, k, "'models' given twice");
		models = yaml_document_get_node(x->doc, p->value);
	}
	if (!models || models->type != YAML_SEQUENCE_NODE)
		return bad(x, models ? models : root, "'models' must be a list of models");
	len = (size_t)(models->data.sequence.items.top - models->data.sequence.items.start);
	if (len == 0 || len > MAX_MODELS)
		return bad(x, models, "'models' must list 1 to %d models", MAX_MODELS);
	out->model = mc_calloc(len, sizeof(*out->model));
	if (!out->model)
		return oom(x);
	it = models->data.sequence.items.start;
	for (size_t i = 0; i < len; i++) {
		yaml_node_t *n = yaml_document_get_node(x->doc, it[i]);

		out->n = i + 1;
		ret = parse_model(x, n, &out->model[i]);
		if (ret)
			return ret;
		for (size_t j = 0; j < i; j++)
			if (!strcmp(out->model[j].name, out->model[i].name))
				return bad(x, n, "model '%s' is listed twice (first on line %u)",
					   out->model[i].name, out->model[j].line);
	}
	return 0;
}

int mc_manifest_parse(const char *text, size_t len, const char *label, struct mc_manifest *out,
		      struct mc_err *err)
{
	struct ctx x = {.label = label, .err = err};
	yaml_parser_t parser;
	yaml_document_t doc;
	int ret;

	memset(out, 0, sizeof(*out));
	if (len > MC_MANIFEST_MAX_BYTES)
		return mc_err_set(err, MC_E_USAGE, "manifest '%s' is larger than %u bytes", label,
				  MC_MANIFEST_MAX_BYTES);
	if (memchr(text, '\0', len))
		return mc_err_set(err, MC_E_USAGE,
				  "manifest '%s' is not text (it holds a NUL byte)", label);
	if (!yaml_parser_initialize(&parser))
		return mc_err_set(err, -ENOMEM, "out of memory");
	yaml_parser_set_input_string(&parser, (const unsigned char *)text, len);
	if (!yaml_parser_load(&parser, &doc)) {
		ret = mc_err_set(err, MC_E_USAGE, "manifest '%s' line %zu: %s%s%s", label,
				 parser.problem_mark.line + 1,
				 parser.problem ? parser.problem : "not valid YAML",
				 parser.context ? " " : "", parser.context ? parser.context : "");
		yaml_parser_delete(&parser);
		return ret;
	}
	x.doc = &doc;
	ret = parse_root(&x, out);
	yaml_document_delete(&doc);
	yaml_parser_delete(&parser);
	if (ret)
		mc_manifest_free(out);
	return ret;
}

int mc_manifest_load(const char *path, struct mc_manifest *out, struct mc_err *err)
{
	char *buf = NULL;
	size_t len = 0;
	ssize_t n;
	int fd, ret;

	memset(out, 0, sizeof(*out));
	fd = strcmp(path, "-") ? open(path, O_RDONLY | O_CLOEXEC) : dup(STDIN_FILENO);
	if (fd < 0 && errno == ENOENT)
		return mc_err_set(err, MC_E_USAGE, "cannot read manifest '%s': no such file", path);
	if (fd < 0)
		return mc_err_errno(err, -errno, "cannot read manifest '%s'", path);
	buf = mc_malloc(MC_MANIFEST_MAX_BYTES + 1);
	if (!buf) {
		close(fd);
		return mc_err_set(err, -ENOMEM, "out of memory");
	}
	/* One byte more than the limit tells "too large" from "exactly the limit". */
	while (len <= MC_MANIFEST_MAX_BYTES &&
	       (n = read(fd, buf + len, MC_MANIFEST_MAX_BYTES + 1 - len)) != 0) {
		if (n < 0) {
			if (errno == EINTR)
				continue;
			ret = errno == EISDIR
				  ? mc_err_set(err, MC_E_USAGE,
					       "cannot read manifest '%s': it is a "
					       "directory",
					       path)
				  : mc_err_errno(err, -errno, "cannot read manifest '%s'", path);
			goto out;
		}
		len += (size_t)n;
	}
	ret = mc_manifest_parse(buf, len, strcmp(path, "-") ? path : "<stdin>", out, err);
out:
	close(fd);
	mc_free(buf);
	return ret;
}

void mc_manifest_sort(struct mc_manifest *m)
{
	/* Insertion sort: stable, and manifests are short. */
	for (size_t i = 1; i < m->n; i++) {
		struct mc_manifest_model t = m->model[i];
		size_t j = i;

		while (j > 0 && m->model[j - 1].priority < t.priority) {
			m->model[j] = m->model[j - 1];
			j--;
		}
		m->model[j] = t;
	}
}

void mc_manifest_free(struct mc_manifest *m)
{
	for (size_t i = 0; m->model && i < m->n; i++)
		model_free(&m->model[i]);
	mc_free(m->model);
	memset(m, 0, sizeof(*m));
}
