/*
 * The models manifest (manifest/): a good file parses into what it says, and every bad one is
 * MC_E_USAGE with a message naming the line at fault (a table, zstd-style: input, pattern).
 */
#include "mc_manifest.h"

#include "mc_test.h"

#include <string.h>

static void test_good(void)
{
	static const char text[] = "# prewarm\n"
				   "models:\n"
				   "  - name: llama-8b\n"
				   "    uri: s3://models/llama-3-8b/\n"
				   "    include: [\"*.safetensors\", \"*.json\"]\n"
				   "    pin: true\n"
				   "    priority: 10\n"
				   "  - name: tiny\n"
				   "    uri:\n"
				   "      - hf://acme/tiny\n"
				   "      - hf://acme/tiny-extra\n"
				   "    revision: v1\n"
				   "    exclude: \"*.bin\"\n"
				   "  - name: later\n"
				   "    uri: https://h/x.safetensors?sig=1\n"
				   "    priority: 20\n";
	struct mc_manifest m;
	struct mc_err err;

	mc_err_init(&err);
	ASSERT_EQ(mc_manifest_parse(text, strlen(text), "t.yaml", &m, &err), 0);
	ASSERT_UINT_EQ(m.n, 3);
	ASSERT_STR_EQ(m.model[0].name, "llama-8b");
	ASSERT_UINT_EQ(m.model[0].nuri, 1);
	ASSERT_STR_EQ(m.model[0].uri[0], "s3://models/llama-3-8b/");
	ASSERT_UINT_EQ(m.model[0].ninclude, 2);
	ASSERT_STR_EQ(m.model[0].include[1], "*.json");
	ASSERT_TRUE(m.model[0].pin);
	ASSERT_EQ(m.model[0].priority, 10);
	ASSERT_EQ(m.model[0].line, 3);
	ASSERT_STR_EQ(m.model[1].uri[0], "hf://acme/tiny@v1");
	ASSERT_STR_EQ(m.model[1].uri[1], "hf://acme/tiny-extra@v1");
	ASSERT_UINT_EQ(m.model[1].nexclude, 1);
	ASSERT_STR_EQ(m.model[1].exclude[0], "*.bin");
	ASSERT_FALSE(m.model[1].pin);
	mc_manifest_sort(&m);
	ASSERT_STR_EQ(m.model[0].name, "later");
	ASSERT_STR_EQ(m.model[1].name, "llama-8b");
	ASSERT_STR_EQ(m.model[2].name, "tiny");
	mc_manifest_free(&m);
}

static void test_bad(void)
{
	static const struct {
		const char *text;
		const char *want; /* a substring of the message */
	} cases[] = {
	    {"", "line 1: empty manifest"},
	    {"models: []\n", "line 1: 'models' must list 1 to"},
	    {"- a\n", "line 1: expected a mapping"},
	    {"modles:\n  - name: a\n", "line 1: unknown top-level key 'modles'"},
	    {"models:\n  - name: a\n    url: http://h/x\n", "line 3: unknown key 'url'"},
	    {"models:\n  - uri: http://h/x\n", "line 2: a model needs a 'name'"},
	    {"models:\n  - name: a\n", "line 2: model 'a' needs a 'uri'"},
	    {"models:\n  - name: ../x\n    uri: http://h/x\n", "line 2: invalid model name"},
	    {"models:\n  - name: a\n    uri: http://h/x\n    pin: yes\n",
	     "line 4: 'pin' must be true or false"},
	    {"models:\n  - name: a\n    uri: http://h/x\n    priority: high\n",
	     "line 4: 'priority' must be an integer"},
	    {"models:\n  - name: a\n    uri: http://h/x\n    priority: 99999999999999999999\n",
	     "line 4: 'priority' must be an integer"},
	    {"models:\n  - name: a\n    uri: {x: 1}\n", "line 3: 'uri' must be a string or a list"},
	    {"models:\n  - name: a\n    uri: []\n", "line 3: 'uri' must list 1 to"},
	    {"models:\n  - name: a\n    uri: http://h/x\n    name: b\n",
	     "line 4: 'name' given twice"},
	    {"models:\n  - name: a\n    uri: http://h/x\n  - name: a\n    uri: http://h/y\n",
	     "line 4: model 'a' is listed twice (first on line 2)"},
	    {"models:\n  - name: a\n    uri: http://h/x\n    revision: main\n",
	     "line 2: 'revision' applies to hf:// URIs only"},
	    {"models:\n  - name: a\n    uri: hf://o/r@v2\n    revision: main\n",
	     "names its own revision"},
	    {"models:\n  - name: a\n    uri: \"http://h/\\x01\"\n",
	     "line 3: 'uri' contains a control"},
	    {"models:\n  - name: a\n    uri: [http://h/x\n", "line 4:"},
	    {"models:\n\t- name: a\n", "line 2:"},
	    {"models:\n  - [a, b]\n", "line 2: a model must be a mapping"},
	};
	struct mc_manifest m;
	struct mc_err err;

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		mc_err_init(&err);
		ASSERT_EQ(
		    mc_manifest_parse(cases[i].text, strlen(cases[i].text), "t.yaml", &m, &err),
		    MC_E_USAGE);
		if (!strstr(err.msg, cases[i].want)) {
			fprintf(stderr, "case %zu: '%s' lacks '%s'\n", i, err.msg, cases[i].want);
			ASSERT_TRUE(0);
		}
		ASSERT_TRUE(strncmp(err.msg, "manifest 't.yaml'", 17) == 0);
		ASSERT_UINT_EQ(m.n, 0);
	}
	/* Binary input: a NUL byte. */
	mc_err_init(&err);
	ASSERT_EQ(mc_manifest_parse("models:\0\n", 9, "t.yaml", &m, &err), MC_E_USAGE);
	ASSERT_TRUE(strstr(err.msg, "not text") != NULL);
}

int main(void)
{
	MC_RUN(test_good);
	MC_RUN(test_bad);
	return 0;
}
