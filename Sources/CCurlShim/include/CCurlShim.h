#ifndef PLEXUS_CCURLSHIM_H
#define PLEXUS_CCURLSHIM_H
int px_curl_placeholder(void);
#endif
