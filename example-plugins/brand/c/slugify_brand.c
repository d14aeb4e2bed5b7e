// `slugify-brand` in C: a URL slug from a brand's name (lowercase letters
// and digits, one '-' between words). A slug in the step's config list
// `reserved` fails the step (permanent invalid-data). Nothing to undo: its
// compensation only logs. Bindings: `wit-bindgen c wit --world step`.
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "step.h"

// The string value of `"key": "..."` in a flat JSON object, or NULL. Handles
// the escapes \" and \\; enough for the brand names this step receives.
static char *json_string(const uint8_t *json, size_t len, const char *key) {
  char pattern[64];
  snprintf(pattern, sizeof pattern, "\"%s\"", key);
  const char *text = (const char *)json;
  const char *end = text + len;
  size_t plen = strlen(pattern);
  for (const char *p = text; p + plen <= end; p++) {
    if (memcmp(p, pattern, plen) != 0) continue;
    const char *q = p + plen;
    while (q < end && (*q == ' ' || *q == ':')) q++;
    if (q >= end || *q != '"') return NULL;
    q++;
    char *out = malloc(len + 1);
    size_t n = 0;
    while (q < end && *q != '"') {
      if (*q == '\\' && q + 1 < end) q++;
      out[n++] = *q++;
    }
    out[n] = '\0';
    return out;
  }
  return NULL;
}

static void set_error(step_step_error_t *err, uint8_t kind, const char *message, bool permanent) {
  err->kind = kind;
  step_string_dup(&err->message, message);
  err->permanent = permanent;
  err->compensation_data.is_some = false;
}

// Whether the step's config lists `slug` under "reserved".
static bool reserved(const step_step_context_t *ctx, const char *slug) {
  const char *config = (const char *)ctx->config.ptr;
  size_t len = ctx->config.len;
  char quoted[256];
  snprintf(quoted, sizeof quoted, "\"%s\"", slug);
  const char *list = NULL;
  for (size_t i = 0; i + 10 <= len; i++) {
    if (memcmp(config + i, "\"reserved\"", 10) == 0) {
      list = config + i + 10;
      break;
    }
  }
  if (list == NULL) return false;
  const char *close = memchr(list, ']', (config + len) - list);
  size_t qlen = strlen(quoted);
  for (const char *p = list; close && p + qlen <= close; p++) {
    if (memcmp(p, quoted, qlen) == 0) return true;
  }
  return false;
}

bool exports_step_invoke(step_json_t *input, step_step_context_t *ctx, step_step_response_t *ret,
                         step_step_error_t *err) {
  bool ok = false;
  char *name = json_string(input->ptr, input->len, "name");
  if (name == NULL) {
    set_error(err, WASAGA_STEP_TYPES_ERROR_KIND_INVALID_DATA, "the input needs a \"name\" string", true);
    goto done;
  }
  char *slug = malloc(strlen(name) + 1);
  size_t n = 0;
  bool gap = false;
  for (const char *c = name; *c; c++) {
    if (isalnum((unsigned char)*c)) {
      if (gap && n > 0) slug[n++] = '-';
      slug[n++] = (char)tolower((unsigned char)*c);
      gap = false;
    } else {
      gap = true;
    }
  }
  slug[n] = '\0';
  if (n == 0) {
    set_error(err, WASAGA_STEP_TYPES_ERROR_KIND_INVALID_DATA, "the brand name has no letters or digits", true);
  } else if (reserved(ctx, slug)) {
    char message[300];
    snprintf(message, sizeof message, "the slug '%s' is reserved", slug);
    set_error(err, WASAGA_STEP_TYPES_ERROR_KIND_INVALID_DATA, message, true);
  } else {
    char *output = malloc(n + 16);
    sprintf(output, "{\"slug\":\"%s\"}", slug);
    ret->tag = WASAGA_STEP_TYPES_STEP_RESPONSE_DONE;
    step_string_dup(&ret->val.done.output, output);
    ret->val.done.compensation_data.is_some = false;
    free(output);
    ok = true;
  }
  free(slug);
  free(name);
done:
  // Exports own their arguments.
  step_json_free(input);
  step_step_context_free(ctx);
  return ok;
}

bool exports_step_compensate(step_json_t *maybe_data, step_step_context_t *ctx, step_step_error_t *err) {
  (void)err;
  step_string_t line;
  step_string_dup(&line, "slugify-brand: a slug is computed, not stored: nothing to undo");
  wasaga_step_log_log(WASAGA_STEP_LOG_LEVEL_INFO, &line);
  step_string_free(&line);
  if (maybe_data) step_json_free(maybe_data);
  step_step_context_free(ctx);
  return true;
}
