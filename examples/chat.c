/* chat.c: a minimal Cipherward chat client on the C API alone, the program a mobile team starts from.
 *
 *   CW_PASSPHRASE=... cipherward-example-chat HOME_DIR NAME RELAY_ADDRESS invite
 *       creates (or opens) the identity, prints an invite code, then prints incoming messages and sends
 *       each line typed on stdin to the first contact who wrote (the one who accepted the invite)
 *   CW_PASSPHRASE=... cipherward-example-chat HOME_DIR NAME RELAY_ADDRESS accept CODE
 *       accepts CODE (saying hello), then chats with the inviter the same way
 *
 * The relay address is what cipherward-relay prints on start (cw://<key>@host:port). End with EOF (Ctrl-D).
 */
#define _POSIX_C_SOURCE 200809L
#include <cipherward/cipherward.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The contact we chat with: set by the main thread (accept) or by the message callback (invite). */
static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
static char g_peer[256];

/* Runs on the client's loop thread: print and remember who wrote; never block here. */
static void on_message(void* user_data, const char* contact, const uint8_t* body, size_t len) {
  (void)user_data;
  pthread_mutex_lock(&g_mu);
  if (g_peer[0] == '\0') snprintf(g_peer, sizeof g_peer, "%s", contact);
  pthread_mutex_unlock(&g_mu);
  printf("%s: %.*s\n", contact, (int)len, (const char*)body);
  fflush(stdout);
}

static int fail(const char* what, cw_status s) {
  fprintf(stderr, "%s: %s\n", what, cw_strerror(s));
  return 1;
}

int main(int argc, char** argv) {
  if (argc < 5 || (strcmp(argv[4], "accept") == 0 && argc < 6)) {
    fprintf(stderr, "usage: %s HOME NAME RELAY invite | accept CODE   (passphrase in CW_PASSPHRASE)\n", argv[0]);
    return 2;
  }
  const char* pass = getenv("CW_PASSPHRASE");
  if (pass == NULL || *pass == '\0') {
    fprintf(stderr, "set CW_PASSPHRASE\n");
    return 2;
  }
  printf("cipherward %s\n", cw_version());

  cw_client* client = NULL;
  cw_status s = cw_client_open(argv[1], (const uint8_t*)pass, strlen(pass), argv[3], argv[2], &client);
  if (s != CW_OK) return fail("open", s);
  /* Set the callback first, then catch up on anything that waited at the relay. */
  s = cw_client_set_on_message(client, on_message, NULL);
  if (s == CW_OK) s = cw_client_sync(client);
  if (s != CW_OK) {
    cw_client_close(client);
    return fail("start", s);
  }

  if (strcmp(argv[4], "invite") == 0) {
    cw_buffer* code = NULL;
    s = cw_client_invite(client, &code);
    if (s != CW_OK) {
      cw_client_close(client);
      return fail("invite", s);
    }
    printf("invite code (give it to your contact):\n%s\n", (const char*)cw_buffer_data(code));
    fflush(stdout);
    cw_buffer_free(code);
  } else {
    static const char hello[] = "Hello, I accepted your invitation.";
    cw_buffer* contact = NULL;
    s = cw_client_accept(client, argv[5], (const uint8_t*)hello, sizeof hello - 1, &contact);
    if (s != CW_OK) {
      cw_client_close(client);
      return fail("accept", s);
    }
    pthread_mutex_lock(&g_mu);
    snprintf(g_peer, sizeof g_peer, "%s", (const char*)cw_buffer_data(contact));
    pthread_mutex_unlock(&g_mu);
    cw_buffer_free(contact);
  }

  char line[4096];
  while (fgets(line, sizeof line, stdin) != NULL) {
    size_t n = strcspn(line, "\n");
    char peer[256];
    pthread_mutex_lock(&g_mu);
    memcpy(peer, g_peer, sizeof peer);
    pthread_mutex_unlock(&g_mu);
    if (peer[0] == '\0') {
      printf("(no contact yet: wait for the first message)\n");
      continue;
    }
    if (strcmp(line, "/verify\n") == 0) {
      cw_buffer* digits = NULL;
      s = cw_client_safety_number(client, peer, &digits);
      if (s == CW_OK) printf("safety number with %s: %s\n", peer, (const char*)cw_buffer_data(digits));
      cw_buffer_free(digits);
    } else {
      s = cw_client_send(client, peer, (const uint8_t*)line, n);
    }
    if (s != CW_OK) fprintf(stderr, "error: %s\n", cw_strerror(s));
  }
  cw_client_close(client);
  return 0;
}
