#ifndef PLEXUS_CCURLSHIM_H
#define PLEXUS_CCURLSHIM_H

// libcurl, loaded lazily.
//
// The plugin binary does NOT link libcurl: `px_curl_load` dlopen()s "libcurl.so.4" on first use and resolves the
// dozen functions below with dlsym(). Paths that never talk to the Kubernetes API (VERSION, DEL from the cache,
// STATUS) therefore never pay for loading libcurl and its ~30 shared dependencies (~6 ms, swift-performance.md §4).
//
// <curl/curl.h> is included for its constants and types only (CURLOPT_*, CURLINFO_*, CURLcode). Never call a
// curl_* function from Swift: that would add a link-time dependency on libcurl. Use the px_curl_* wrappers, which
// are typed and non-variadic (Swift cannot call curl_easy_setopt/getinfo).
//
// A px_curl handle owns one CURL easy handle plus everything a request needs to outlive the call that set it:
// the header list, a copy of the request body, the response body buffer (write callback) and the raw response
// header block of the final response (header callback). A handle is not thread-safe; use it from one thread.

#include <stddef.h>
#include <curl/curl.h>

typedef struct px_curl px_curl;

/// Loads libcurl (once per process; later calls return the first result) and runs curl_global_init.
/// Returns 0 on success; otherwise -1 and a message in `err` (NUL-terminated, at most `n` bytes).
int px_curl_load(char *err, size_t n);

/// 1 when libcurl has been loaded successfully in this process, else 0. Never loads it.
int px_curl_is_loaded(void);

/// The loaded libcurl's version string ("7.88.1"), or NULL when not loaded.
const char *px_curl_version(void);

/// A new handle (requires px_curl_load to have succeeded), or NULL.
px_curl *px_curl_new(void);
void px_curl_free(px_curl *h);

/// curl_easy_reset (keeps live connections, TLS sessions and DNS cache) and clears the request state (headers,
/// body) and the response buffers. Installs the shim's callbacks, NOSIGNAL and an error buffer again.
void px_curl_reset(px_curl *h);

/// Typed curl_easy_setopt. Return the CURLcode.
int px_curl_setopt_long(px_curl *h, CURLoption opt, long value);
/// String options; libcurl copies the string. NULL resets/disables the option.
int px_curl_setopt_string(px_curl *h, CURLoption opt, const char *value);
int px_curl_setopt_off_t(px_curl *h, CURLoption opt, long long value);
/// Blob options (CAINFO_BLOB, SSLCERT_BLOB, SSLKEY_BLOB); the data is copied (CURL_BLOB_COPY).
int px_curl_setopt_blob(px_curl *h, CURLoption opt, const void *data, size_t len);

/// Appends one request header line ("Name: value"); installed as CURLOPT_HTTPHEADER. Returns a CURLcode.
int px_curl_append_header(px_curl *h, const char *line);

/// Sets the request body (copied into the handle; may be empty with len 0) as POSTFIELDSIZE_LARGE + POSTFIELDS,
/// which makes the request a POST unless CURLOPT_CUSTOMREQUEST names another method. Returns a CURLcode.
int px_curl_set_body(px_curl *h, const void *data, size_t len);

/// Caps the response body; a larger body fails the transfer with CURLE_WRITE_ERROR. 0 means the default (32 MiB).
void px_curl_set_max_body(px_curl *h, size_t max);

/// Called with each piece of the response body as it arrives (instead of buffering it); return 0 to go on, anything
/// else aborts the transfer (CURLE_WRITE_ERROR). Used for watches. Cleared by px_curl_reset.
typedef int (*px_curl_stream_fn)(const unsigned char *data, size_t len, void *ctx);
void px_curl_set_stream(px_curl *h, px_curl_stream_fn fn, void *ctx);

/// Performs the transfer. Returns the CURLcode (0 = the HTTP exchange completed, whatever the status code).
int px_curl_perform(px_curl *h);

/// Typed curl_easy_getinfo. Return the CURLcode.
int px_curl_getinfo_long(px_curl *h, CURLINFO info, long *out);
int px_curl_getinfo_double(px_curl *h, CURLINFO info, double *out);

/// The response body of the last transfer (valid until the next reset/perform/free).
const unsigned char *px_curl_body(px_curl *h, size_t *len);
/// The raw header block of the last response (status line and header lines, CRLF-separated; earlier blocks such
/// as "100 Continue" are discarded). For HTTP/2 it also holds the trailers: libcurl passes them to the header
/// callback after the body, after the blank line that ends the headers, and they never start a new block (gRPC
/// reads grpc-status from there).
const char *px_curl_headers(px_curl *h, size_t *len);
/// 1 when the body cap was hit during the last transfer.
int px_curl_body_overflowed(px_curl *h);

/// libcurl's detailed error text of the last transfer (CURLOPT_ERRORBUFFER); "" when none.
const char *px_curl_error_detail(px_curl *h);
/// curl_easy_strerror, or a generic text when libcurl is not loaded.
const char *px_curl_strerror(int code);

#endif
