/* The C API end to end, in C11 and through include/cipherward/cipherward.h alone: two clients against a real
 * cipherward-relay (started by capi_test.sh, which passes its address and a scratch directory), a
 * conversation whose messages arrive through the callback, matching safety numbers, and bad calls that
 * return clear statuses. Waits are bounded (a safety net against hangs), never timing assertions. */
#define _POSIX_C_SOURCE 200809L
#include <cipherward/cipherward.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static int g_failures = 0;
#define CHECK(cond)                                                   \
  do {                                                                \
    if (!(cond)) {                                                    \
      fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
      g_failures++;                                                   \
    }                                                                 \
  } while (0)
#define CHECK_STATUS(expr, want)                                                                   \
  do {                                                                                             \
    cw_status got_ = (expr);                                                                       \
    if (got_ != (want)) {                                                                          \
      fprintf(stderr, "%s:%d: %s returned %d (%s), want %d (%s)\n", __FILE__, __LINE__, #expr,     \
              (int)got_, cw_strerror(got_), (int)(want), cw_strerror(want));                       \
      g_failures++;                                                                                \
    }                                                                                              \
  } while (0)
#define REQUIRE_OK(expr)                       \
  do {                                         \
    int before_ = g_failures;                  \
    CHECK_STATUS(expr, CW_OK);                 \
    if (g_failures != before_) return 1;       \
  } while (0)
#define REQUIRE(cond)                    \
  do {                                   \
    int before_ = g_failures;            \
    CHECK(cond);                         \
    if (g_failures != before_) return 1; \
  } while (0)

/* What a client's message callback saw: written on its loop thread, read by the test thread. */
typedef struct inbox {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  int count;
  char contact[64];
  char body[256];
} inbox;

/* Set when the 1:1 callback sees a group's text: group texts must reach only the group callback. */
static const char kGroupText[] = "huddle at nine";
static volatile int g_group_text_as_1to1 = 0;

static void record(inbox* in, const char* contact, const uint8_t* body, size_t len) {
  pthread_mutex_lock(&in->mu);
  snprintf(in->contact, sizeof in->contact, "%s", contact);
  snprintf(in->body, sizeof in->body, "%.*s", (int)len, (const char*)body);
  in->count++;
  pthread_cond_broadcast(&in->cv);
  pthread_mutex_unlock(&in->mu);
}

static void on_message(void* user_data, const char* contact, const uint8_t* body, size_t len) {
  if (len == sizeof kGroupText - 1 && memcmp(body, kGroupText, len) == 0) g_group_text_as_1to1 = 1;
  record((inbox*)user_data, contact, body, len);
}

/* Waits (bounded) until `in` has seen at least `n` messages; returns whether it did. */
static int wait_for(inbox* in, int n) {
  struct timespec deadline;
  clock_gettime(CLOCK_REALTIME, &deadline);
  deadline.tv_sec += 60;
  pthread_mutex_lock(&in->mu);
  int rc = 0;
  while (in->count < n && rc != ETIMEDOUT) rc = pthread_cond_timedwait(&in->cv, &in->mu, &deadline);
  int ok = in->count >= n;
  pthread_mutex_unlock(&in->mu);
  return ok;
}

static void inbox_init(inbox* in) {
  memset(in, 0, sizeof *in);
  pthread_mutex_init(&in->mu, NULL);
  pthread_cond_init(&in->cv, NULL);
}

static const uint8_t* u8(const char* s) { return (const uint8_t*)s; }

/* Receipts: `contact` is the contact, `body` "read" or "delivered"; `count` counts read receipts only in
 * `reads`. */
typedef struct receipts {
  inbox in;
  int reads;
} receipts;
static void on_receipt(void* user_data, const char* contact, uint64_t sequence, int read) {
  receipts* r = (receipts*)user_data;
  pthread_mutex_lock(&r->in.mu);
  snprintf(r->in.contact, sizeof r->in.contact, "%s", contact);
  snprintf(r->in.body, sizeof r->in.body, "%s %llu", read ? "read" : "delivered", (unsigned long long)sequence);
  if (read) r->reads++;
  r->in.count++;
  pthread_cond_broadcast(&r->in.cv);
  pthread_mutex_unlock(&r->in.mu);
}
/* Waits (bounded) until `r` has seen at least `n` read receipts. */
static int wait_for_reads(receipts* r, int n) {
  for (int i = 0; i < 600; ++i) {
    pthread_mutex_lock(&r->in.mu);
    int got = r->reads;
    pthread_mutex_unlock(&r->in.mu);
    if (got >= n) return 1;
    struct timespec ts = {0, 100 * 1000 * 1000};
    nanosleep(&ts, NULL);
  }
  return 0;
}

/* Files: `body` holds the file name, `seq` its sequence. */
static uint64_t g_file_seq = 0;
static void on_file(void* user_data, const char* contact, uint64_t sequence, const char* file_name, uint64_t size) {
  inbox* in = (inbox*)user_data;
  pthread_mutex_lock(&in->mu);
  snprintf(in->contact, sizeof in->contact, "%s", contact);
  snprintf(in->body, sizeof in->body, "%s:%llu", file_name, (unsigned long long)size);
  g_file_seq = sequence;
  in->count++;
  pthread_cond_broadcast(&in->cv);
  pthread_mutex_unlock(&in->mu);
}

/* Progress: the last (done, total) seen and how many reports. */
typedef struct progress {
  uint64_t done, total;
  int calls;
} progress;
static void on_progress(void* user_data, uint64_t done, uint64_t total) {
  progress* p = (progress*)user_data;
  p->done = done;
  p->total = total;
  p->calls++;
}

/* A file upload on its own thread, for closing the client while it runs. `started` is set at its first
 * progress report (progress runs on the uploading thread). */
typedef struct background_upload {
  cw_client* client;
  const char* path;
  inbox started;
  cw_status status;
} background_upload;
static void on_upload_progress(void* user_data, uint64_t done, uint64_t total) {
  (void)done;
  (void)total;
  background_upload* u = (background_upload*)user_data;
  record(&u->started, "", (const uint8_t*)"", 0);
}
static void* run_upload(void* arg) {
  background_upload* u = (background_upload*)arg;
  u->status = cw_client_send_file(u->client, "patient", u->path, on_upload_progress, u, NULL);
  return NULL;
}

/* Closes its client from inside one of the client's callbacks: the first progress report of an upload (on
 * the uploading thread, inside the call), or the lock callback (on the loop thread). Counts the calls it
 * gets: none comes after the close. */
typedef struct closer {
  cw_client* client;
  int calls;
} closer;
static void close_on_progress(void* user_data, uint64_t done, uint64_t total) {
  (void)done;
  (void)total;
  closer* c = (closer*)user_data;
  if (c->calls++ == 0) cw_client_close(c->client);
}
static void close_on_row(void* user_data, const cw_message_row* row) {
  (void)row;
  closer* c = (closer*)user_data;
  if (c->calls++ == 0) cw_client_close(c->client);
}
static void close_on_lock(void* user_data) {
  closer* c = (closer*)user_data;
  if (c->calls++ == 0) cw_client_close(c->client);
}

/* Opens the identity at `home` once a client closed from a callback has let go of its store (it is freed on
 * a helper thread, after the callback and the call it ran in returned). */
static cw_status open_when_released(const char* home, const char* pass, cw_client** out) {
  cw_status s = CW_ERR_UNAVAILABLE;
  for (int i = 0; i < 400 && s == CW_ERR_UNAVAILABLE; ++i) {
    s = cw_client_open(home, u8(pass), strlen(pass), NULL, NULL, out);
    if (s == CW_ERR_UNAVAILABLE) {
      struct timespec ts = {0, 25 * 1000 * 1000};
      nanosleep(&ts, NULL);
    }
  }
  return s;
}

static void on_lock(void* user_data) {
  inbox* in = (inbox*)user_data;
  pthread_mutex_lock(&in->mu);
  in->count++;
  pthread_cond_broadcast(&in->cv);
  pthread_mutex_unlock(&in->mu);
}

/* What a group callback saw. */
typedef struct group_inbox {
  inbox in; /* contact: the sender */
  char group_id[72];
  uint64_t sequence;
} group_inbox;

static void on_group_message(void* user_data, const char* group_id, const char* sender, uint64_t sequence,
                             const uint8_t* body, size_t len) {
  group_inbox* g = (group_inbox*)user_data;
  pthread_mutex_lock(&g->in.mu);
  snprintf(g->group_id, sizeof g->group_id, "%s", group_id);
  g->sequence = sequence;
  pthread_mutex_unlock(&g->in.mu);
  record(&g->in, sender, body, len);
}

/* What a history walk saw (on the calling thread). */
typedef struct rows {
  int count, outgoing, files, ascending;
  uint64_t last_sequence;
  char first_body[64], last_body[64], last_sender[64];
} rows;

static void on_row(void* user_data, const cw_message_row* row) {
  rows* r = (rows*)user_data;
  if (row->struct_size < sizeof(cw_message_row)) return;
  if (r->count == 0) {
    r->ascending = 1;
    snprintf(r->first_body, sizeof r->first_body, "%.*s", (int)row->body_len, (const char*)row->body);
  } else if (row->sequence <= r->last_sequence) {
    r->ascending = 0;
  }
  r->count++;
  r->outgoing += row->outgoing;
  r->files += row->is_file;
  r->last_sequence = row->sequence;
  snprintf(r->last_body, sizeof r->last_body, "%.*s", (int)row->body_len, (const char*)row->body);
  snprintf(r->last_sender, sizeof r->last_sender, "%s", row->sender);
}

/* Whether the JSON text in `b` contains `needle`. */
static int json_has(const cw_buffer* b, const char* needle) {
  return b != NULL && strstr((const char*)cw_buffer_data(b), needle) != NULL;
}

int main(int argc, char** argv) {
  if (argc != 3) {
    fprintf(stderr, "usage: %s RELAY_ADDRESS WORK_DIR\n", argv[0]);
    return 2;
  }
  const char* relay = argv[1];
  char clinician_home[1024], patient_home[1024], nobody_home[1024];
  snprintf(clinician_home, sizeof clinician_home, "%s/clinician", argv[2]);
  snprintf(patient_home, sizeof patient_home, "%s/patient", argv[2]);
  snprintf(nobody_home, sizeof nobody_home, "%s/nobody", argv[2]);
  static const char pass[] = "correct horse battery staple";

  /* Version and error text. */
  CHECK(cw_version() != NULL && strcmp(cw_version(), "") != 0);
  CHECK(strcmp(cw_strerror(CW_OK), "ok") == 0);
  CHECK(strstr(cw_strerror(CW_ERR_PERMISSION_DENIED), "passphrase") != NULL);
  CHECK(strcmp(cw_strerror(12345), "unknown status") == 0);

  /* NULL arguments: a clear status, nothing written. */
  cw_client* none = NULL;
  CHECK_STATUS(cw_client_open(NULL, u8(pass), strlen(pass), relay, "x", &none), CW_ERR_INVALID_ARGUMENT);
  CHECK_STATUS(cw_client_open(clinician_home, NULL, 5, relay, "x", &none), CW_ERR_INVALID_ARGUMENT);
  CHECK_STATUS(cw_client_open(clinician_home, u8(pass), strlen(pass), relay, "x", NULL), CW_ERR_INVALID_ARGUMENT);
  CHECK(none == NULL);
  CHECK_STATUS(cw_client_send(NULL, "x", u8("y"), 1), CW_ERR_INVALID_ARGUMENT);
  CHECK_STATUS(cw_client_invite(NULL, NULL), CW_ERR_INVALID_ARGUMENT);
  CHECK_STATUS(cw_client_set_on_message(NULL, on_message, NULL), CW_ERR_INVALID_ARGUMENT);
  CHECK(cw_buffer_data(NULL) == NULL && cw_buffer_size(NULL) == 0);
  cw_buffer_free(NULL);
  cw_client_close(NULL);
  /* Creating an identity needs a name. */
  CHECK_STATUS(cw_client_open(nobody_home, u8(pass), strlen(pass), NULL, NULL, &none), CW_ERR_INVALID_ARGUMENT);

  /* Two identities, registered with the relay. */
  cw_client* clinician = NULL;
  cw_client* patient = NULL;
  REQUIRE_OK(cw_client_open(clinician_home, u8(pass), strlen(pass), relay, "clinician", &clinician));
  REQUIRE_OK(cw_client_open(patient_home, u8(pass), strlen(pass), relay, "patient", &patient));
  inbox clinician_in, patient_in;
  inbox_init(&clinician_in);
  inbox_init(&patient_in);
  REQUIRE_OK(cw_client_set_on_message(clinician, on_message, &clinician_in));
  REQUIRE_OK(cw_client_set_on_message(patient, on_message, &patient_in));
  receipts patient_receipts;
  memset(&patient_receipts, 0, sizeof patient_receipts);
  inbox_init(&patient_receipts.in);
  REQUIRE_OK(cw_client_set_on_receipt(patient, on_receipt, &patient_receipts));
  inbox patient_files;
  inbox_init(&patient_files);
  REQUIRE_OK(cw_client_set_on_file(patient, on_file, &patient_files));

  cw_buffer* name = NULL;
  REQUIRE_OK(cw_client_name(patient, &name));
  CHECK(strcmp((const char*)cw_buffer_data(name), "patient") == 0 && cw_buffer_size(name) == 7);
  cw_buffer_free(name);

  /* Invitation: the patient accepts the clinician's code, and its first message reaches the clinician. */
  cw_buffer* code = NULL;
  REQUIRE_OK(cw_client_invite(clinician, &code));
  CHECK(cw_buffer_size(code) > 0 && strlen((const char*)cw_buffer_data(code)) == cw_buffer_size(code));
  CHECK_STATUS(cw_client_accept(patient, "not an invite code", u8("hi"), 2, NULL), CW_ERR_MALFORMED);
  cw_buffer* inviter = NULL;
  REQUIRE_OK(cw_client_accept(patient, (const char*)cw_buffer_data(code), u8("hello doctor"), 12, &inviter));
  CHECK(strcmp((const char*)cw_buffer_data(inviter), "clinician") == 0);
  cw_buffer_free(inviter);
  cw_buffer_free(code);

  CHECK(wait_for(&clinician_in, 1));
  pthread_mutex_lock(&clinician_in.mu);
  CHECK(strcmp(clinician_in.contact, "patient") == 0);
  CHECK(strcmp(clinician_in.body, "hello doctor") == 0);
  pthread_mutex_unlock(&clinician_in.mu);

  /* Open invites: an hour-long one is listed by its id (the answered one is not, once its answer, which
   * follows the first message, is in), and cancelled. */
  REQUIRE_OK(cw_client_sync(clinician));
  CHECK_STATUS(cw_client_invite_valid_for(clinician, -1, &code), CW_ERR_INVALID_ARGUMENT);
  REQUIRE_OK(cw_client_invite_valid_for(clinician, 3600 * 1000, &code));
  cw_buffer_free(code);
  cw_buffer* invites = NULL;
  REQUIRE_OK(cw_client_list_invites(clinician, &invites));
  const char* id_at = strstr((const char*)cw_buffer_data(invites), "\"id\":\"");
  CHECK(id_at != NULL && strstr(id_at + 1, "\"id\":\"") == NULL); /* exactly one */
  char invite_id[13] = {0};
  if (id_at != NULL) memcpy(invite_id, id_at + 6, 12);
  cw_buffer_free(invites);
  CHECK_STATUS(cw_client_cancel_invite(clinician, "000000000000"), CW_ERR_NOT_FOUND);
  REQUIRE_OK(cw_client_cancel_invite(clinician, invite_id));
  CHECK_STATUS(cw_client_cancel_invite(clinician, invite_id), CW_ERR_NOT_FOUND);
  CHECK_STATUS(cw_client_cancel_invite(clinician, NULL), CW_ERR_INVALID_ARGUMENT);
  REQUIRE_OK(cw_client_list_invites(clinician, &invites));
  CHECK(strcmp((const char*)cw_buffer_data(invites), "[]") == 0);
  cw_buffer_free(invites);

  /* An invite for a contact's new device names the contact, and is listed as such. */
  CHECK_STATUS(cw_client_invite_for_new_device(clinician, "nobody", &code), CW_ERR_NOT_FOUND);
  CHECK_STATUS(cw_client_invite_for_new_device(clinician, NULL, &code), CW_ERR_INVALID_ARGUMENT);
  REQUIRE_OK(cw_client_invite_for_new_device(clinician, "patient", &code));
  cw_buffer_free(code);
  REQUIRE_OK(cw_client_list_invites(clinician, &invites));
  CHECK(strstr((const char*)cw_buffer_data(invites), "\"for\":\"patient\"") != NULL);
  id_at = strstr((const char*)cw_buffer_data(invites), "\"id\":\"");
  if (id_at != NULL) memcpy(invite_id, id_at + 6, 12);
  cw_buffer_free(invites);
  REQUIRE_OK(cw_client_cancel_invite(clinician, invite_id));

  /* Both ways, with bytes that are not text. */
  static const uint8_t reply[] = {'h', 'o', 'w', 0, 'a', 'r', 'e', ' ', 'y', 'o', 'u'};
  REQUIRE_OK(cw_client_send(clinician, "patient", reply, sizeof reply));
  CHECK(wait_for(&patient_in, 1));
  pthread_mutex_lock(&patient_in.mu);
  CHECK(strcmp(patient_in.contact, "clinician") == 0);
  CHECK(strcmp(patient_in.body, "how") == 0); /* the copy stops at the NUL; the length reached us whole */
  pthread_mutex_unlock(&patient_in.mu);
  REQUIRE_OK(cw_client_send(patient, "clinician", u8("much better"), 11));
  CHECK(wait_for(&clinician_in, 2));
  pthread_mutex_lock(&clinician_in.mu);
  CHECK(strcmp(clinician_in.body, "much better") == 0);
  pthread_mutex_unlock(&clinician_in.mu);

  /* Safety numbers: 60 digits, the same on both sides. */
  cw_buffer* sn_clinician = NULL;
  cw_buffer* sn_patient = NULL;
  REQUIRE_OK(cw_client_safety_number(clinician, "patient", &sn_clinician));
  REQUIRE_OK(cw_client_safety_number(patient, "clinician", &sn_patient));
  CHECK(cw_buffer_size(sn_clinician) == 60);
  CHECK(cw_buffer_size(sn_clinician) == cw_buffer_size(sn_patient) &&
        memcmp(cw_buffer_data(sn_clinician), cw_buffer_data(sn_patient), cw_buffer_size(sn_patient)) == 0);
  cw_buffer_free(sn_clinician);
  cw_buffer_free(sn_patient);
  CHECK_STATUS(cw_client_verify(clinician, "patient", 1), CW_OK);
  /* No identity change awaits a decision. */
  CHECK_STATUS(cw_client_accept_identity_change(clinician, "patient"), CW_ERR_INVALID_ARGUMENT);
  CHECK_STATUS(cw_client_reject_identity_change(clinician, "patient"), CW_ERR_INVALID_ARGUMENT);
  CHECK_STATUS(cw_client_reject_identity_change(clinician, NULL), CW_ERR_INVALID_ARGUMENT);
  /* Nor was any key of theirs rejected, so there is no rejection to take back. */
  cw_buffer* no_number = NULL;
  CHECK_STATUS(cw_client_reconsider_identity_change(clinician, "patient", &no_number), CW_ERR_NOT_FOUND);
  CHECK(no_number == NULL);
  CHECK_STATUS(cw_client_reconsider_identity_change(clinician, NULL, NULL), CW_ERR_INVALID_ARGUMENT);

  /* Unknown contacts. */
  cw_buffer* unused = NULL;
  CHECK_STATUS(cw_client_send(clinician, "stranger", u8("x"), 1), CW_ERR_NOT_FOUND);
  CHECK_STATUS(cw_client_safety_number(clinician, "stranger", &unused), CW_ERR_NOT_FOUND);
  CHECK_STATUS(cw_client_send(clinician, NULL, u8("x"), 1), CW_ERR_INVALID_ARGUMENT);
  CHECK(unused == NULL);

  /* Receipts: the clinician stored "hello doctor" and "much better" and reads both; the patient hears. */
  size_t marked = 0;
  REQUIRE_OK(cw_client_mark_read(clinician, "patient", 3, &marked));
  CHECK(marked == 2);
  REQUIRE_OK(cw_client_mark_read(clinician, "patient", 3, &marked));
  CHECK(marked == 0);
  CHECK(wait_for_reads(&patient_receipts, 2));
  pthread_mutex_lock(&patient_receipts.in.mu);
  CHECK(strcmp(patient_receipts.in.contact, "clinician") == 0);
  pthread_mutex_unlock(&patient_receipts.in.mu);
  CHECK_STATUS(cw_client_mark_read(clinician, "stranger", 1, NULL), CW_ERR_NOT_FOUND);

  /* Files: sent with progress, announced by the callback, fetched by sequence with progress. */
  char file_path[1100], dest_path[1100];
  snprintf(file_path, sizeof file_path, "%s/lab-results.txt", argv[2]);
  snprintf(dest_path, sizeof dest_path, "%s/fetched.txt", argv[2]);
  static const char file_text[] = "HbA1c 6.1%, LDL 2.4 mmol/L";
  FILE* f = fopen(file_path, "wb");
  CHECK(f != NULL);
  if (f != NULL) {
    fwrite(file_text, 1, sizeof file_text - 1, f);
    fclose(f);
  }
  progress up = {0, 0, 0}, down = {0, 0, 0};
  uint64_t file_seq = 0;
  REQUIRE_OK(cw_client_send_file(clinician, "patient", file_path, on_progress, &up, &file_seq));
  CHECK(file_seq > 0);
  CHECK(up.calls >= 2 && up.done == sizeof file_text - 1 && up.total == sizeof file_text - 1);
  CHECK(wait_for(&patient_files, 1));
  pthread_mutex_lock(&patient_files.mu);
  CHECK(strcmp(patient_files.contact, "clinician") == 0);
  CHECK(strcmp(patient_files.body, "lab-results.txt:26") == 0);
  uint64_t got_seq = g_file_seq;
  pthread_mutex_unlock(&patient_files.mu);
  REQUIRE_OK(cw_client_fetch_attachment(patient, "clinician", got_seq, dest_path, on_progress, &down));
  CHECK(down.done == sizeof file_text - 1 && down.calls >= 2);
  char back[64] = {0};
  f = fopen(dest_path, "rb");
  CHECK(f != NULL);
  if (f != NULL) {
    CHECK(fread(back, 1, sizeof back - 1, f) == sizeof file_text - 1);
    fclose(f);
  }
  CHECK(strcmp(back, file_text) == 0);
  /* The destination exists now; a text message is not a file; no such message. */
  CHECK(cw_client_fetch_attachment(patient, "clinician", got_seq, dest_path, NULL, NULL) != CW_OK);
  CHECK_STATUS(cw_client_fetch_attachment(patient, "clinician", 1, "/nonexistent/x", NULL, NULL), CW_ERR_NOT_FOUND);
  CHECK_STATUS(cw_client_fetch_attachment(patient, "clinician", 999, dest_path, NULL, NULL), CW_ERR_NOT_FOUND);
  CHECK(cw_client_send_file(clinician, "patient", "/nonexistent/file", NULL, NULL, NULL) != CW_OK);

  /* Consent: granted for two purposes, one withdrawn; the list shows both states. */
  const char* purposes[] = {"treatment", "billing"};
  cw_buffer* receipt_id = NULL;
  REQUIRE_OK(cw_client_grant_consent(patient, "clinician", purposes, 2, 0, &receipt_id));
  CHECK(cw_buffer_size(receipt_id) == 32);
  const char* bad_purpose[] = {"Not A Label"};
  CHECK_STATUS(cw_client_grant_consent(patient, "clinician", bad_purpose, 1, 0, NULL), CW_ERR_INVALID_ARGUMENT);
  CHECK_STATUS(cw_client_grant_consent(patient, "clinician", NULL, 0, 0, NULL), CW_ERR_INVALID_ARGUMENT);
  const char* billing[] = {"billing"};
  /* The withdrawal needs the countersigned receipt, which the clinician's device sends back. */
  cw_status withdrawn = CW_ERR_NOT_FOUND;
  for (int i = 0; i < 600 && withdrawn != CW_OK; ++i) {
    withdrawn = cw_client_withdraw_consent(patient, (const char*)cw_buffer_data(receipt_id), billing, 1);
    if (withdrawn != CW_OK) {
      struct timespec ts = {0, 100 * 1000 * 1000};
      nanosleep(&ts, NULL);
    }
  }
  CHECK_STATUS(withdrawn, CW_OK);
  cw_buffer* consents = NULL;
  REQUIRE_OK(cw_client_list_consents(patient, &consents));
  const char* json = (const char*)cw_buffer_data(consents);
  CHECK(strstr(json, (const char*)cw_buffer_data(receipt_id)) != NULL);
  CHECK(strstr(json, "\"billing\":\"withdrawn\"") != NULL);
  CHECK(strstr(json, "\"treatment\":\"given\"") != NULL);
  cw_buffer_free(consents);
  cw_buffer_free(receipt_id);
  CHECK_STATUS(cw_client_withdraw_consent(patient, "00", NULL, 0), CW_ERR_NOT_FOUND);

  /* Purposes: on a clinic device a purpose that needs consent goes only where a receipt holds it ("marketing"
   * was never granted); "treatment" needs none. A refused file is not even read. */
  REQUIRE_OK(cw_client_set_clinic(clinician, 1));
  CHECK_STATUS(cw_client_send_for_purpose(clinician, "patient", "marketing", u8("news"), 4), CW_ERR_PERMISSION_DENIED);
  CHECK_STATUS(cw_client_send_for_purpose(clinician, "patient", "Not A Label", u8("x"), 1), CW_ERR_INVALID_ARGUMENT);
  progress marketing_up = {0, 0, 0};
  CHECK_STATUS(cw_client_send_file_for_purpose(clinician, "patient", file_path, "marketing", on_progress, &marketing_up,
                                               NULL),
               CW_ERR_PERMISSION_DENIED);
  CHECK(marketing_up.calls == 0);
  REQUIRE_OK(cw_client_send_for_purpose(clinician, "patient", "treatment", u8("take with food"), 14));
  REQUIRE_OK(cw_client_send_for_purpose(clinician, "patient", NULL, u8("see you"), 7));
  REQUIRE_OK(cw_client_set_clinic(clinician, 0));
  REQUIRE_OK(cw_client_send_for_purpose(clinician, "patient", "marketing", u8("news"), 4));
  CHECK_STATUS(cw_client_set_clinic(NULL, 1), CW_ERR_INVALID_ARGUMENT);

  /* Contacts: the patient, verified and reachable. */
  cw_buffer* contacts = NULL;
  REQUIRE_OK(cw_client_list_contacts(clinician, &contacts));
  CHECK(json_has(contacts, "\"name\":\"patient\""));
  CHECK(json_has(contacts, "\"trust\":\"verified\""));
  CHECK(json_has(contacts, "\"reachable\":true"));
  cw_buffer_free(contacts);
  CHECK_STATUS(cw_client_list_contacts(clinician, NULL), CW_ERR_INVALID_ARGUMENT);

  /* History: what the clinician stored, oldest first, the file among it. */
  rows h;
  memset(&h, 0, sizeof h);
  REQUIRE_OK(cw_client_history(clinician, "patient", 1000, on_row, &h));
  CHECK(h.count >= 4 && h.ascending);
  CHECK(strcmp(h.first_body, "hello doctor") == 0);
  CHECK(h.files == 1 && h.outgoing >= 2);
  memset(&h, 0, sizeof h);
  REQUIRE_OK(cw_client_history(clinician, "patient", 1, on_row, &h));
  CHECK(h.count == 1);
  CHECK_STATUS(cw_client_history(clinician, "patient", 10, NULL, NULL), CW_ERR_INVALID_ARGUMENT);

  /* A care-team group: its texts reach the group callback, never on_message; the admin alone changes it. */
  group_inbox patient_group, clinician_group;
  memset(&patient_group, 0, sizeof patient_group);
  memset(&clinician_group, 0, sizeof clinician_group);
  inbox_init(&patient_group.in);
  inbox_init(&clinician_group.in);
  REQUIRE_OK(cw_client_set_on_group_message(patient, on_group_message, &patient_group));
  REQUIRE_OK(cw_client_set_on_group_message(clinician, on_group_message, &clinician_group));
  const char* members[] = {"patient"};
  const char* strangers[] = {"stranger"};
  cw_buffer* group = NULL;
  cw_buffer* unreached = NULL;
  CHECK_STATUS(cw_client_group_create(clinician, "x", strangers, 1, &group, NULL), CW_ERR_NOT_FOUND);
  CHECK_STATUS(cw_client_group_create(clinician, "x", NULL, 1, &group, NULL), CW_ERR_INVALID_ARGUMENT);
  CHECK(group == NULL);
  REQUIRE_OK(cw_client_group_create(clinician, "Cardiology team", members, 1, &group, &unreached));
  CHECK(cw_buffer_size(group) == 64);
  CHECK(strcmp((const char*)cw_buffer_data(unreached),
               "{\"no_session\":[],\"untrusted\":[],\"unvouched\":[]}") == 0);
  cw_buffer_free(unreached);
  const char* gid = (const char*)cw_buffer_data(group);
  uint64_t group_seq = 0;
  REQUIRE_OK(cw_client_group_send(clinician, gid, NULL, u8(kGroupText), sizeof kGroupText - 1, &group_seq));
  CHECK(group_seq > 0);
  CHECK(wait_for(&patient_group.in, 1));
  pthread_mutex_lock(&patient_group.in.mu);
  CHECK(strcmp(patient_group.group_id, gid) == 0);
  CHECK(strcmp(patient_group.in.contact, "clinician") == 0);
  CHECK(strcmp(patient_group.in.body, kGroupText) == 0);
  pthread_mutex_unlock(&patient_group.in.mu);
  CHECK(!g_group_text_as_1to1);
  REQUIRE_OK(cw_client_group_send(patient, gid, "treatment", u8("on my way"), 9, NULL));
  CHECK(wait_for(&clinician_group.in, 1));
  pthread_mutex_lock(&clinician_group.in.mu);
  CHECK(strcmp(clinician_group.in.body, "on my way") == 0 && strcmp(clinician_group.in.contact, "patient") == 0);
  pthread_mutex_unlock(&clinician_group.in.mu);
  cw_buffer* groups = NULL;
  REQUIRE_OK(cw_client_list_groups(patient, &groups));
  CHECK(json_has(groups, gid) && json_has(groups, "\"admin\":\"clinician\"") && json_has(groups, "\"active\":true"));
  cw_buffer_free(groups);
  memset(&h, 0, sizeof h);
  REQUIRE_OK(cw_client_group_history(patient, gid, 100, on_row, &h));
  CHECK(h.count == 2 && h.outgoing == 1 && h.ascending);
  CHECK(strcmp(h.first_body, kGroupText) == 0 && strcmp(h.last_body, "on my way") == 0);
  CHECK_STATUS(cw_client_group_send(clinician, "00000000000000000000000000000000", NULL, u8("x"), 1, NULL),
               CW_ERR_NOT_FOUND);
  CHECK_STATUS(cw_client_group_add(patient, gid, "clinician", NULL), CW_ERR_PERMISSION_DENIED);
  REQUIRE_OK(cw_client_group_remove(clinician, gid, "patient", NULL));
  int inactive = 0;
  for (int i = 0; i < 100 && !inactive; ++i) {
    REQUIRE_OK(cw_client_sync(patient));
    REQUIRE_OK(cw_client_list_groups(patient, &groups));
    inactive = json_has(groups, "\"active\":false");
    cw_buffer_free(groups);
  }
  CHECK(inactive);
  cw_buffer_free(group);

  /* The disappearing timer: set, in force, off. */
  int64_t in_force = -1;
  REQUIRE_OK(cw_client_set_disappearing(clinician, "patient", 3600000, &in_force));
  CHECK(in_force == 3600000);
  REQUIRE_OK(cw_client_set_disappearing(clinician, "patient", 0, &in_force));
  CHECK(in_force == 0);
  CHECK_STATUS(cw_client_set_disappearing(clinician, "patient", -1, NULL), CW_ERR_INVALID_ARGUMENT);

  /* Export: a signed bundle. */
  cw_buffer* bundle = NULL;
  REQUIRE_OK(cw_client_export(patient, &bundle));
  CHECK(cw_buffer_size(bundle) > 0);
  cw_buffer_free(bundle);

  /* Lock: everything refused until the right passphrase unlocks. */
  CHECK(cw_client_is_locked(patient) == 0);
  REQUIRE_OK(cw_client_lock(patient));
  CHECK(cw_client_is_locked(patient) == 1);
  CHECK_STATUS(cw_client_send(patient, "clinician", u8("x"), 1), CW_ERR_PERMISSION_DENIED);
  CHECK_STATUS(cw_client_export(patient, &bundle), CW_ERR_PERMISSION_DENIED);
  CHECK_STATUS(cw_client_unlock(patient, u8("wrong passphrase"), 16), CW_ERR_PERMISSION_DENIED);
  CHECK(cw_client_is_locked(patient) == 1);
  REQUIRE_OK(cw_client_unlock(patient, u8(pass), strlen(pass)));
  CHECK(cw_client_is_locked(patient) == 0);
  REQUIRE_OK(cw_client_send(patient, "clinician", u8("unlocked"), 8));
  CHECK(cw_client_is_locked(NULL) == 1);
  CHECK_STATUS(cw_client_lock(NULL), CW_ERR_INVALID_ARGUMENT);

  cw_client_close(patient);
  cw_client_close(clinician);

  /* A wrong passphrase is refused; the right one still opens the identity (with its contact). */
  CHECK_STATUS(cw_client_open(clinician_home, u8("wrong passphrase"), 16, NULL, NULL, &none),
               CW_ERR_PERMISSION_DENIED);
  CHECK(none == NULL);
  /* Reopened with automatic logoff: it locks itself and says so. */
  cw_options options;
  memset(&options, 0, sizeof options);
  options.struct_size = sizeof options;
  options.auto_lock_after_ms = 300;
  inbox locks;
  inbox_init(&locks);
  options.struct_size = 1;
  CHECK_STATUS(cw_client_open_ex(clinician_home, u8(pass), strlen(pass), NULL, NULL, &options, &none),
               CW_ERR_INVALID_ARGUMENT);
  options.struct_size = sizeof options;
  REQUIRE_OK(cw_client_open_ex(clinician_home, u8(pass), strlen(pass), NULL, NULL, &options, &clinician));
  REQUIRE_OK(cw_client_set_on_lock(clinician, on_lock, &locks));
  CHECK(wait_for(&locks, 1));
  CHECK(cw_client_is_locked(clinician) == 1);
  REQUIRE_OK(cw_client_unlock(clinician, u8(pass), strlen(pass)));
  cw_client_close(clinician);
  /* Direct links: an address that does not parse is refused; a loopback one opens. */
  options.auto_lock_after_ms = 0;
  options.direct_listen = "not an address";
  CHECK_STATUS(cw_client_open_ex(clinician_home, u8(pass), strlen(pass), NULL, NULL, &options, &none),
               CW_ERR_INVALID_ARGUMENT);
  CHECK(none == NULL);
  options.direct_listen = "127.0.0.1:0";
  REQUIRE_OK(cw_client_open_ex(clinician_home, u8(pass), strlen(pass), NULL, NULL, &options, &clinician));
  cw_client_close(clinician);
  REQUIRE_OK(cw_client_open(clinician_home, u8(pass), strlen(pass), NULL, NULL, &clinician));
  /* Sync waits for the background link to come up (revoking below needs it). */
  REQUIRE_OK(cw_client_sync(clinician));
  CHECK_STATUS(cw_client_verify(clinician, "patient", 0), CW_OK);

  /* Closing while another thread is inside a call: the call returns (aborted, or done if it won the race)
   * and close frees the client only after that. Under ASan a use after free here fails the test. */
  {
    char big_path[1100];
    snprintf(big_path, sizeof big_path, "%s/scan.bin", argv[2]);
    FILE* big = fopen(big_path, "wb");
    REQUIRE(big != NULL);
    static uint8_t block[65536];
    memset(block, 0x5c, sizeof block);
    for (int i = 0; i < 128; ++i) fwrite(block, 1, sizeof block, big); /* 8 MiB */
    fclose(big);
    background_upload u;
    memset(&u, 0, sizeof u);
    u.client = clinician;
    u.path = big_path;
    inbox_init(&u.started);
    pthread_t uploader;
    REQUIRE(pthread_create(&uploader, NULL, run_upload, &u) == 0);
    CHECK(wait_for(&u.started, 1));
    cw_client_close(clinician);
    pthread_join(uploader, NULL);
    CHECK(u.status == CW_OK || u.status == CW_ERR_ABORTED);
    REQUIRE_OK(cw_client_open(clinician_home, u8(pass), strlen(pass), NULL, NULL, &clinician));
    REQUIRE_OK(cw_client_sync(clinician));

    /* Closing from the upload's own progress callback: close cannot wait for the call it is inside, so it
     * returns at once; the upload stops, no progress is reported after the close, and the client is freed
     * once the call returned (its store opens again). It used to wait for itself for ever. */
    closer c = {clinician, 0};
    const cw_status sent = cw_client_send_file(clinician, "patient", big_path, close_on_progress, &c, NULL);
    CHECK(sent == CW_ERR_ABORTED || sent == CW_OK);
    CHECK(c.calls == 1);
    clinician = NULL;
    REQUIRE_OK(open_when_released(clinician_home, pass, &clinician));

    /* The same from the loop thread (the lock callback): the loop cannot join itself. */
    cw_client_close(clinician);
    options.auto_lock_after_ms = 100;
    options.direct_listen = NULL;
    REQUIRE_OK(cw_client_open_ex(clinician_home, u8(pass), strlen(pass), NULL, NULL, &options, &clinician));
    closer l = {clinician, 0};
    REQUIRE_OK(cw_client_set_on_lock(clinician, close_on_lock, &l));
    clinician = NULL;
    REQUIRE_OK(open_when_released(clinician_home, pass, &clinician));
    CHECK(l.calls == 1);

    /* And from a history row: the walk stops there. */
    closer r = {clinician, 0};
    CHECK_STATUS(cw_client_history(clinician, "patient", 1000, close_on_row, &r), CW_ERR_ABORTED);
    CHECK(r.calls == 1);
    clinician = NULL;
    REQUIRE_OK(open_when_released(clinician_home, pass, &clinician));
    REQUIRE_OK(cw_client_sync(clinician));
  }

  /* Erasure, then the contact removed (its deposit token revoked at the relay). */
  cw_buffer* erasure = NULL;
  REQUIRE_OK(cw_client_erase_conversation(clinician, "patient", &erasure));
  CHECK(cw_buffer_size(erasure) > 0);
  cw_buffer_free(erasure);
  memset(&h, 0, sizeof h);
  cw_status erased = cw_client_history(clinician, "patient", 1000, on_row, &h);
  CHECK(erased == CW_ERR_NOT_FOUND || (erased == CW_OK && h.count == 0));
  REQUIRE_OK(cw_client_remove_contact(clinician, "patient"));
  REQUIRE_OK(cw_client_list_contacts(clinician, &contacts));
  CHECK(!json_has(contacts, "\"patient\""));
  cw_buffer_free(contacts);
  CHECK_STATUS(cw_client_revoke_contact(clinician, "patient"), CW_ERR_NOT_FOUND);
  cw_client_close(clinician);

  if (g_failures != 0) {
    fprintf(stderr, "%d check(s) failed\n", g_failures);
    return 1;
  }
  printf("ok\n");
  return 0;
}
