#include "CCurlShim.h"
int px_curl_placeholder(void) { return 0; }
