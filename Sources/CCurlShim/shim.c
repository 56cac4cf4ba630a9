#define CURL_DISABLE_TYPECHECK 1
#include "CCurlShim.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

// ---------------------------------------------------------------------------------------------------------------
// Lazy loading

typedef CURLcode (*fn_global_init)(long);
typedef CURL *(*fn_easy_init)(void);
typedef void (*fn_easy_cleanup)(CURL *);
typedef void (*fn_easy_reset)(CURL *);
typedef CURLcode (*fn_easy_setopt)(CURL *, CURLoption, ...);
typedef CURLcode (*fn_easy_perform)(CURL *);
typedef CURLcode (*fn_easy_getinfo)(CURL *, CURLINFO, ...);
typedef const char *(*fn_easy_strerror)(CURLcode);
typedef struct curl_slist *(*fn_slist_append)(struct curl_slist *, const char *);
typedef void (*fn_slist_free_all)(struct curl_slist *);
typedef char *(*fn_version)(void);

static struct {
    fn_global_init global_init;
    fn_easy_init easy_init;
    fn_easy_cleanup easy_cleanup;
    fn_easy_reset easy_reset;
    fn_easy_setopt easy_setopt;
    fn_easy_perform easy_perform;
    fn_easy_getinfo easy_getinfo;
    fn_easy_strerror easy_strerror;
    fn_slist_append slist_append;
    fn_slist_free_all slist_free_all;
    fn_version version;
} api;

static pthread_mutex_t load_lock = PTHREAD_MUTEX_INITIALIZER;
static int load_state;            // 0 = not tried, 1 = loaded, -1 = failed
static char load_error[512];
static char version_string[64];

static void copy_error(char *err, size_t n, const char *msg) {
    if (err == NULL || n == 0) return;
    snprintf(err, n, "%s", msg);
}

static int do_load(void) {
    // RTLD_LOCAL: libcurl's symbols (and those of its ~30 dependencies) stay out of the global namespace.
    void *lib = dlopen("libcurl.so.4", RTLD_NOW | RTLD_LOCAL);
    if (lib == NULL) {
        const char *e = dlerror();
        snprintf(load_error, sizeof load_error, "cannot load libcurl.so.4: %s", e ? e : "unknown error");
        return -1;
    }
#define RESOLVE(field, name)                                                                      \
    do {                                                                                          \
        *(void **)(&api.field) = dlsym(lib, name);                                                \
        if (api.field == NULL) {                                                                  \
            snprintf(load_error, sizeof load_error, "libcurl.so.4 lacks the symbol %s", name);    \
            return -1;                                                                            \
        }                                                                                         \
    } while (0)
    RESOLVE(global_init, "curl_global_init");
    RESOLVE(easy_init, "curl_easy_init");
    RESOLVE(easy_cleanup, "curl_easy_cleanup");
    RESOLVE(easy_reset, "curl_easy_reset");
    RESOLVE(easy_setopt, "curl_easy_setopt");
    RESOLVE(easy_perform, "curl_easy_perform");
    RESOLVE(easy_getinfo, "curl_easy_getinfo");
    RESOLVE(easy_strerror, "curl_easy_strerror");
    RESOLVE(slist_append, "curl_slist_append");
    RESOLVE(slist_free_all, "curl_slist_free_all");
    RESOLVE(version, "curl_version");
#undef RESOLVE
    // The library is never dlclose()d: OpenSSL registers atexit handlers.
    CURLcode rc = api.global_init(CURL_GLOBAL_DEFAULT);
    if (rc != CURLE_OK) {
        snprintf(load_error, sizeof load_error, "curl_global_init failed: %s", api.easy_strerror(rc));
        return -1;
    }
    // curl_version() returns "libcurl/7.88.1 OpenSSL/3.0.x ..."; keep the libcurl part.
    const char *v = api.version();
    if (v != NULL) {
        if (strncmp(v, "libcurl/", 8) == 0) v += 8;
        size_t i = 0;
        while (v[i] != '\0' && v[i] != ' ' && i + 1 < sizeof version_string) { version_string[i] = v[i]; i++; }
        version_string[i] = '\0';
    }
    return 0;
}

int px_curl_load(char *err, size_t n) {
    pthread_mutex_lock(&load_lock);
    if (load_state == 0) load_state = do_load() == 0 ? 1 : -1;
    int state = load_state;
    pthread_mutex_unlock(&load_lock);
    if (state == 1) return 0;
    copy_error(err, n, load_error);
    return -1;
}

int px_curl_is_loaded(void) {
    pthread_mutex_lock(&load_lock);
    int state = load_state;
    pthread_mutex_unlock(&load_lock);
    return state == 1;
}

const char *px_curl_version(void) { return px_curl_is_loaded() ? version_string : NULL; }

// ---------------------------------------------------------------------------------------------------------------
// Handles

#define PX_DEFAULT_MAX_BODY ((size_t)32 << 20)
#define PX_MAX_HEADERS ((size_t)256 << 10)

struct px_curl {
    CURL *easy;
    struct curl_slist *headers;
    unsigned char *req_body;
    size_t req_len;

    unsigned char *body;
    size_t body_len, body_cap, body_max;
    int body_overflow;

    char *hdr;
    size_t hdr_len, hdr_cap;

    char errbuf[CURL_ERROR_SIZE];

    px_curl_stream_fn stream_fn;
    void *stream_ctx;
};

static int grow(void **buf, size_t *cap, size_t need) {
    if (need <= *cap) return 0;
    size_t c = *cap ? *cap : 4096;
    while (c < need) c *= 2;
    void *p = realloc(*buf, c);
    if (p == NULL) return -1;
    *buf = p;
    *cap = c;
    return 0;
}

static size_t on_write(char *data, size_t size, size_t nmemb, void *ctx) {
    px_curl *h = ctx;
    size_t n = size * nmemb;
    if (h->stream_fn != NULL) return h->stream_fn((const unsigned char *)data, n, h->stream_ctx) == 0 ? n : 0;
    if (h->body_len + n > h->body_max) { h->body_overflow = 1; return 0; }
    if (grow((void **)&h->body, &h->body_cap, h->body_len + n + 1) != 0) return 0;
    memcpy(h->body + h->body_len, data, n);
    h->body_len += n;
    return n;
}

static size_t on_header(char *data, size_t size, size_t nmemb, void *ctx) {
    px_curl *h = ctx;
    size_t n = size * nmemb;
    // A status line starts a new response (after "100 Continue", a proxy CONNECT reply or a redirect): keep only
    // the headers of the final response.
    if (n >= 5 && memcmp(data, "HTTP/", 5) == 0) h->hdr_len = 0;
    if (h->hdr_len + n > PX_MAX_HEADERS) return 0;
    if (grow((void **)&h->hdr, &h->hdr_cap, h->hdr_len + n + 1) != 0) return 0;
    memcpy(h->hdr + h->hdr_len, data, n);
    h->hdr_len += n;
    h->hdr[h->hdr_len] = '\0';
    return n;
}

static void install_defaults(px_curl *h) {
    h->errbuf[0] = '\0';
    api.easy_setopt(h->easy, CURLOPT_ERRORBUFFER, h->errbuf);
    api.easy_setopt(h->easy, CURLOPT_WRITEFUNCTION, on_write);
    api.easy_setopt(h->easy, CURLOPT_WRITEDATA, (void *)h);
    api.easy_setopt(h->easy, CURLOPT_HEADERFUNCTION, on_header);
    api.easy_setopt(h->easy, CURLOPT_HEADERDATA, (void *)h);
    // Never raise signals (timeouts use SIGALRM otherwise): the plugin handles its own signals.
    api.easy_setopt(h->easy, CURLOPT_NOSIGNAL, 1L);
}

static void clear_request(px_curl *h) {
    if (h->headers != NULL) { api.slist_free_all(h->headers); h->headers = NULL; }
    free(h->req_body);
    h->req_body = NULL;
    h->req_len = 0;
}

static void clear_response(px_curl *h) {
    h->body_len = 0;
    h->body_overflow = 0;
    h->hdr_len = 0;
    if (h->hdr != NULL) h->hdr[0] = '\0';
    h->errbuf[0] = '\0';
}

px_curl *px_curl_new(void) {
    if (!px_curl_is_loaded()) return NULL;
    px_curl *h = calloc(1, sizeof *h);
    if (h == NULL) return NULL;
    h->easy = api.easy_init();
    if (h->easy == NULL) { free(h); return NULL; }
    h->body_max = PX_DEFAULT_MAX_BODY;
    install_defaults(h);
    return h;
}

void px_curl_free(px_curl *h) {
    if (h == NULL) return;
    api.easy_cleanup(h->easy);
    clear_request(h);
    free(h->body);
    free(h->hdr);
    free(h);
}

void px_curl_reset(px_curl *h) {
    api.easy_reset(h->easy);
    clear_request(h);
    clear_response(h);
    h->stream_fn = NULL;
    h->stream_ctx = NULL;
    install_defaults(h);
}

void px_curl_set_stream(px_curl *h, px_curl_stream_fn fn, void *ctx) {
    h->stream_fn = fn;
    h->stream_ctx = ctx;
}

int px_curl_setopt_long(px_curl *h, CURLoption opt, long value) { return api.easy_setopt(h->easy, opt, value); }

int px_curl_setopt_string(px_curl *h, CURLoption opt, const char *value) {
    return api.easy_setopt(h->easy, opt, value);
}

int px_curl_setopt_off_t(px_curl *h, CURLoption opt, long long value) {
    return api.easy_setopt(h->easy, opt, (curl_off_t)value);
}

int px_curl_setopt_blob(px_curl *h, CURLoption opt, const void *data, size_t len) {
    struct curl_blob blob;
    blob.data = (void *)data;
    blob.len = len;
    blob.flags = CURL_BLOB_COPY;
    return api.easy_setopt(h->easy, opt, &blob);
}

int px_curl_append_header(px_curl *h, const char *line) {
    struct curl_slist *l = api.slist_append(h->headers, line);
    if (l == NULL) return CURLE_OUT_OF_MEMORY;
    h->headers = l;
    return api.easy_setopt(h->easy, CURLOPT_HTTPHEADER, h->headers);
}

int px_curl_set_body(px_curl *h, const void *data, size_t len) {
    free(h->req_body);
    h->req_body = malloc(len ? len : 1);
    if (h->req_body == NULL) return CURLE_OUT_OF_MEMORY;
    if (len) memcpy(h->req_body, data, len);
    h->req_len = len;
    CURLcode rc = api.easy_setopt(h->easy, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
    if (rc != CURLE_OK) return rc;
    return api.easy_setopt(h->easy, CURLOPT_POSTFIELDS, (void *)h->req_body);
}

void px_curl_set_max_body(px_curl *h, size_t max) { h->body_max = max ? max : PX_DEFAULT_MAX_BODY; }

int px_curl_perform(px_curl *h) {
    clear_response(h);
    return api.easy_perform(h->easy);
}

int px_curl_getinfo_long(px_curl *h, CURLINFO info, long *out) { return api.easy_getinfo(h->easy, info, out); }

int px_curl_getinfo_double(px_curl *h, CURLINFO info, double *out) { return api.easy_getinfo(h->easy, info, out); }

const unsigned char *px_curl_body(px_curl *h, size_t *len) {
    *len = h->body_len;
    return h->body;
}

const char *px_curl_headers(px_curl *h, size_t *len) {
    *len = h->hdr_len;
    return h->hdr;
}

int px_curl_body_overflowed(px_curl *h) { return h->body_overflow; }

const char *px_curl_error_detail(px_curl *h) { return h->errbuf; }

const char *px_curl_strerror(int code) {
    if (!px_curl_is_loaded()) return "libcurl not loaded";
    return api.easy_strerror((CURLcode)code);
}
