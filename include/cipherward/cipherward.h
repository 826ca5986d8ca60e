/* cipherward.h: the C API of Cipherward, the one stable ABI for mobile teams and other embedders.
 *
 * What it is: a thin C11 layer over the client runtime (core/runtime/client.h). A cw_client owns one local
 * identity (its passphrase-wrapped keystore and sealed store in a home directory) and its link to a blind
 * relay; it sends and receives end-to-end encrypted text and files with contacts made through invite codes,
 * one to one and in care-team groups.
 *
 * Conventions:
 *   - Handles are opaque. Every function returns a cw_status (CW_OK on success) unless noted; results come
 *     back through out-parameters, which are written only on success. A call that fails never fires a
 *     callback on its behalf.
 *   - No C++ exception and no C++ type crosses this boundary.
 *   - Byte strings are (pointer, length) pairs and may hold any bytes; names and codes are NUL-terminated
 *     UTF-8.
 *   - cw_buffer is how the library hands bytes back (invite codes, safety numbers). Its memory is wiped
 *     (sodium_memzero) when freed with cw_buffer_free; free every buffer you receive.
 *   - Error text (cw_strerror) never holds a key, plaintext, passphrase or name.
 *
 * Threads: every function may be called from any thread, concurrently, on a live client. Functions that
 * talk to the relay (cw_client_open with a relay address, cw_client_invite, cw_client_invite_valid_for,
 * cw_client_cancel_invite, cw_client_accept, cw_client_sync,
 * cw_client_send_file, cw_client_fetch_attachment, cw_client_revoke_contact, cw_client_remove_contact) and
 * cw_client_unlock
 * block until the relay answers or a timeout (15 s) passes, and must NOT be called from inside a callback
 * (they return CW_ERR_PERMISSION_DENIED there). Callbacks run on the client's own loop thread.
 */
#ifndef CIPHERWARD_CIPHERWARD_H_
#define CIPHERWARD_CIPHERWARD_H_

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(CW_BUILDING_LIBRARY) && defined(__GNUC__)
#define CW_EXPORT __attribute__((visibility("default")))
#else
#define CW_EXPORT
#endif

#if defined(__GNUC__)
#define CW_NODISCARD __attribute__((warn_unused_result))
#else
#define CW_NODISCARD
#endif

/* Status codes. Stable values: new codes are only ever appended. */
typedef enum cw_status {
  CW_OK = 0,
  CW_ERR_INVALID_ARGUMENT = 1,    /* a NULL or unusable argument */
  CW_ERR_MALFORMED = 2,           /* bytes from outside (an invite code, a message) do not parse */
  CW_ERR_UNSUPPORTED_VERSION = 3, /* a known format at a version this library does not speak */
  CW_ERR_BAD_SIGNATURE = 4,       /* a signature did not verify (e.g. the relay served someone else's keys) */
  CW_ERR_TAMPERED = 5,            /* authenticated data failed to open */
  CW_ERR_DUPLICATE = 6,           /* already received */
  CW_ERR_TOO_FAR_AHEAD = 7,       /* a message skips more keys than the ratchet keeps */
  CW_ERR_NO_SESSION = 8,          /* no session with that contact yet (their first message has not arrived) */
  CW_ERR_UNTRUSTED_IDENTITY = 9,  /* the contact's identity key changed: see cw_client_accept_identity_change
                                     and cw_client_reject_identity_change */
  CW_ERR_NOT_FOUND = 10,          /* no such contact, or no identity in the home directory */
  CW_ERR_ALREADY_EXISTS = 11,
  CW_ERR_PERMISSION_DENIED = 12,  /* wrong passphrase, or a blocking call made from a callback */
  CW_ERR_RESOURCE_EXHAUSTED = 13, /* a limit was reached (e.g. the contact's mailbox is full) */
  CW_ERR_UNAVAILABLE = 14,        /* the relay cannot be reached, or the store is busy; retry later */
  CW_ERR_INTERNAL = 15,           /* a bug or an unexpected failure inside the library */
  CW_ERR_ABORTED = 16,            /* stopped on purpose before committing anything */
  CW_ERR_NO_MEMORY = 17           /* an allocation failed */
} cw_status;

/* The library version, "MAJOR.MINOR.PATCH". Static storage; never NULL. */
CW_EXPORT const char* cw_version(void);

/* A short English description of `status` (unknown values included). Static storage; never NULL. */
CW_EXPORT const char* cw_strerror(int status);

/* ---- Buffers ---------------------------------------------------------------------------------------- */

/* Bytes owned by the library, handed to the caller. The data is followed by a NUL byte not counted in the
 * size, so text buffers (invite codes, safety numbers) can be used as C strings. */
typedef struct cw_buffer cw_buffer;

/* REQUIRES: buffer is a live buffer or NULL (NULL gives NULL / 0). */
CW_EXPORT const uint8_t* cw_buffer_data(const cw_buffer* buffer);
CW_EXPORT size_t cw_buffer_size(const cw_buffer* buffer);
/* Wipes and frees. NULL is a no-op. */
CW_EXPORT void cw_buffer_free(cw_buffer* buffer);

/* ---- Client ----------------------------------------------------------------------------------------- */

typedef struct cw_client cw_client;

/* Opens the identity in `home_dir`, or creates one there when it holds none (then `name`, the name this
 * identity shows to contacts, is required; otherwise it is ignored and may be NULL).
 * When `relay_address` (cw://<key>@host:port) is non-NULL, registers with that relay if not registered yet.
 * Whenever the identity is registered with a relay (now or earlier), keeps a link to it open in the
 * background from then on: incoming messages reach the on_message callback as they arrive.
 * Errors: CW_ERR_PERMISSION_DENIED on a wrong passphrase; CW_ERR_INVALID_ARGUMENT for NULL arguments or a
 * missing name on creation; CW_ERR_UNAVAILABLE when the relay cannot be reached or the store is held by
 * another process, or while the keystore backs off after wrong passphrases.
 * The passphrase is not retained by the library; the caller wipes its copy. */
CW_EXPORT CW_NODISCARD cw_status cw_client_open(const char* home_dir, const uint8_t* passphrase,
                                                size_t passphrase_len, const char* relay_address,
                                                const char* name, cw_client** out_client);

/* Stops the client's loop thread and frees it. Once it returns, no callback of this client runs any more.
 * Calls other threads are making on this client meanwhile return (CW_ERR_ABORTED when they had to stop),
 * and close waits for them before it frees anything. NULL is a no-op. Close a handle once: a handle a
 * callback closed is gone for every thread (a second close racing the first returns at once rather than
 * free it twice, but one after the first finished is a use after free).
 * From one of this client's callbacks (progress and history rows included) it cannot wait for itself: it
 * returns at once and no callback of this client starts from then on, but one already running on another
 * thread may still finish. The call the callback ran in returns (CW_ERR_ABORTED when it had to stop), and a
 * helper thread frees the client after that: its store can be opened again (and everything its callbacks
 * use freed) once the helper is done, which a successful cw_client_open of the same home shows. Do not exit
 * the process before then: the helper is still writing what the client keeps at close.
 * REQUIRES: no call on this client starts after close returned (the handle is gone). */
CW_EXPORT void cw_client_close(cw_client* client);

/* The name this identity shows to contacts, as a buffer. */
CW_EXPORT CW_NODISCARD cw_status cw_client_name(cw_client* client, cw_buffer** out_name);

/* A new invite code (text that fits a QR code) for a new contact to pass to cw_client_accept (answered under
 * the name of an existing contact, its message is dropped: see cw_client_invite_for_new_device). Needs the
 * relay. It admits a new contact for a week, enforced by the relay whether or not this device is online: its
 * token takes a first message only until then (that message claims it for the contact for good), and
 * lapses if nobody wrote by then. CW_ERR_UNSUPPORTED_VERSION from a relay too old to enforce that (an invite
 * that never expires, cw_client_invite_valid_for with 0, still works with it). */
CW_EXPORT CW_NODISCARD cw_status cw_client_invite(cw_client* client, cw_buffer** out_code);

/* The same, valid for `valid_for_ms` milliseconds (0: never expires; CW_ERR_INVALID_ARGUMENT when negative or
 * over a year). */
CW_EXPORT CW_NODISCARD cw_status cw_client_invite_valid_for(cw_client* client, int64_t valid_for_ms,
                                                            cw_buffer** out_code);

/* An invite code for the new device of `contact` (a lost phone, a reinstall), valid as cw_client_invite's:
 * answered under that contact's name only, with a new identity key, it raises the identity change the user
 * then compares (cw_client_accept_identity_change or cw_client_reject_identity_change). The code names the
 * contact under its author's signature (a version 3 code: clients from before it refuse it as newer), so a
 * client under another name refuses it (a modified client could still answer it: this device admits that
 * contact's name only). CW_ERR_NOT_FOUND when `contact` is no contact. Revoking or removing the contact
 * withdraws its device codes (one made before would let the revoked key back in): for a lost phone, revoke
 * first, then make the new phone's code. */
CW_EXPORT CW_NODISCARD cw_status cw_client_invite_for_new_device(cw_client* client, const char* contact,
                                                                 cw_buffer** out_code);

/* Our invites that no contact has answered and that have not expired, as a JSON array of objects {"id" (12
 * hex digits naming it on this device; not its token), "created_ms", "expires_ms" (0: never), "for" (""
 * for a new contact, else the contact whose new device it is for)}, oldest first. */
CW_EXPORT CW_NODISCARD cw_status cw_client_list_invites(cw_client* client, cw_buffer** out_json);

/* Cancels an invite (by the id cw_client_list_invites gives; an expired one too): an answer to it binds
 * nobody, and its token is revoked at the relay, so its code admits nobody, nor whoever already wrote with it.
 * CW_ERR_NOT_FOUND for an id that names no invite this device remembers. When the relay does not answer
 * (CW_ERR_UNAVAILABLE), the cancellation stands all the same and the relay is told as soon as it is reached. */
CW_EXPORT CW_NODISCARD cw_status cw_client_cancel_invite(cw_client* client, const char* invite_id);

/* Accepts an invite code: makes its author a contact and queues `first_message` (len bytes; may be empty)
 * to them, which lets them answer. The contact's name is returned in *out_contact when out_contact is not
 * NULL. CW_ERR_MALFORMED for a bad code; CW_ERR_BAD_SIGNATURE for a code altered on the way (its author's
 * identity key signs everything in it); CW_ERR_UNSUPPORTED_VERSION for a code from an older (unsigned) or
 * newer version; CW_ERR_INVALID_ARGUMENT for an invite of this device's own;
 * CW_ERR_ALREADY_EXISTS for a contact already made, or for an author whose name is this device's own or is
 * known under another identity key (contacts are known by name, so two people of one name are refused).
 * A code for a new device (cw_client_invite_for_new_device) says whose: CW_ERR_PERMISSION_DENIED when it is
 * not this identity's name; for this one's, it is taken from a contact already made too (a new phone that
 * answered a code for new contacts first, which its author refused), and replaces how the two reach each
 * other. */
CW_EXPORT CW_NODISCARD cw_status cw_client_accept(cw_client* client, const char* code, const uint8_t* first_message,
                                                  size_t len, cw_buffer** out_contact);

/* Encrypts and queues `len` bytes for `contact_name`; delivered at once when the relay link is up, else
 * when it comes back. CW_ERR_NOT_FOUND for an unknown contact, CW_ERR_NO_SESSION before the contact's first
 * message reached us, CW_ERR_UNTRUSTED_IDENTITY while an identity change awaits acceptance. */
CW_EXPORT CW_NODISCARD cw_status cw_client_send(cw_client* client, const char* contact_name, const uint8_t* bytes,
                                                size_t len);
/* cw_client_send with a purpose label: "treatment" (what cw_client_send uses; also when `purpose` is NULL),
 * "scheduling", "billing", "marketing" or "x-<clinic's own>". CW_ERR_INVALID_ARGUMENT for another label. On a
 * clinic device (cw_client_set_clinic) CW_ERR_PERMISSION_DENIED when the purpose needs the contact's consent
 * and no valid receipt holds it; nothing is stored or sent then. The contact's device checks the label too. */
CW_EXPORT CW_NODISCARD cw_status cw_client_send_for_purpose(cw_client* client, const char* contact_name,
                                                            const char* purpose, const uint8_t* bytes, size_t len);
/* Makes this device a clinic's (on != 0) or not (0), kept in its store: a clinic device sends a message whose
 * purpose needs consent ("billing", "marketing" and "x-" labels; not "treatment" or "scheduling") only to a
 * contact whose consent receipt holds that purpose. Off by default. */
CW_EXPORT CW_NODISCARD cw_status cw_client_set_clinic(cw_client* client, int on);

/* Connects (if needed), delivers queued messages and fetches waiting ones now (their on_message callbacks
 * run before this returns). Optional: the background link does the same on its own. */
CW_EXPORT CW_NODISCARD cw_status cw_client_sync(cw_client* client);

/* Called once per incoming message, after it is stored (committed: an application crash does not lose it;
 * the store syncs in groups, and the relay lets go of the message only once its sync is done, so after a
 * power loss it may be received, and reported, again). Runs on the client's loop thread: keep it
 * short, do not block, and do not call the blocking functions listed at the top of this file. `contact` and
 * `body` are valid only during the call (copy what you keep; the body memory is wiped afterwards).
 * Order: within one conversation (a contact's 1:1 chat, or one group), each sender's messages that come
 * through the relay are reported in the order they were sent, a reconnect in the middle of a burst included.
 * Messages over a direct link are in order too, but while one path is down the other can run ahead of it. */
typedef void (*cw_message_fn)(void* user_data, const char* contact, const uint8_t* body, size_t len);

/* Sets (or, with cb NULL, clears) the message callback. Safe from any thread; a callback already running, or
 * about to run, may still be called once with the old value after this returns, so free what `user_data`
 * points to only after cw_client_close. Messages received while no callback is set are stored but not
 * reported. The other cw_client_set_on_* functions work the same way. */
CW_EXPORT CW_NODISCARD cw_status cw_client_set_on_message(cw_client* client, cw_message_fn cb, void* user_data);

/* Called when a contact's identity key changed: sending to them fails with CW_ERR_UNTRUSTED_IDENTITY until
 * the user decides, after comparing the new safety number: cw_client_accept_identity_change or
 * cw_client_reject_identity_change. Runs on the client's loop thread, like cw_message_fn. */
typedef void (*cw_identity_change_fn)(void* user_data, const char* contact);
CW_EXPORT CW_NODISCARD cw_status cw_client_set_on_identity_change(cw_client* client, cw_identity_change_fn cb,
                                                                  void* user_data);

/* The 60-digit safety number shared with `contact` (the same on both sides), as text in a buffer.
 * Users compare it out of band, then call cw_client_verify. */
CW_EXPORT CW_NODISCARD cw_status cw_client_safety_number(cw_client* client, const char* contact,
                                                         cw_buffer** out_digits);

/* Marks `contact` verified (verified != 0) or not. Verifying also sends a contact what it missed of the
 * groups shared with it (this device's group key; from the admin, the membership). */
CW_EXPORT CW_NODISCARD cw_status cw_client_verify(cw_client* client, const char* contact, int verified);

/* Accepts `contact`'s new identity key after the user compared the new safety number; sending resumes, and
 * once a message from their new device arrives it is caught up on the groups shared with it (it rejoins
 * the groups this device administers). */
CW_EXPORT CW_NODISCARD cw_status cw_client_accept_identity_change(cw_client* client, const char* contact);

/* Rejects `contact`'s new identity key when the new safety number does not match theirs: whoever wrote under
 * their name with it is someone else. Their previous key, and its verified mark, stand again, so sending
 * resumes; messages from the rejected key are dropped, without asking again. CW_ERR_INVALID_ARGUMENT when no
 * change awaits. If the change came through an invite code of ours, cancel that invite
 * (cw_client_cancel_invite): it reached the wrong person. */
CW_EXPORT CW_NODISCARD cw_status cw_client_reject_identity_change(cw_client* client, const char* contact);

/* Takes back the last rejection of a new identity key of `contact`, when the user rejected their real new
 * device by mistake (otherwise that device could never write to us again). The key awaits a decision again,
 * as an identity change: *out_safety_number (may be NULL) receives its 60-digit safety number to compare,
 * then cw_client_accept_identity_change or cw_client_reject_identity_change. Rejected again, the next call
 * offers the key rejected before it, and so on through every rejected key. What it sent while rejected
 * was dropped. CW_ERR_NOT_FOUND when no key of the contact was rejected; CW_ERR_INVALID_ARGUMENT while
 * another change awaits a decision. */
CW_EXPORT CW_NODISCARD cw_status cw_client_reconsider_identity_change(cw_client* client, const char* contact,
                                                                      cw_buffer** out_safety_number);

/* ---- Options, lock and receipts ------------------------------------------------------------------- */

/* Options for cw_client_open_ex. Zero-initialize, set struct_size = sizeof(cw_options), then the fields you
 * want; a field the library does not know (a newer caller) is ignored, a field the caller did not set (an
 * older caller, smaller struct_size) keeps its default. */
typedef struct cw_options {
  size_t struct_size;
  /* Lock the client by itself after this long without a call from the caller (HIPAA automatic logoff);
   * 0 never. The on_lock callback says when it happened. */
  int64_t auto_lock_after_ms;
  /* Non-zero: do NOT send delivery / read receipts to contacts (they are sent by default). */
  int no_delivery_receipts;
  int no_read_receipts;
  /* "host:port" to listen on for direct peer-to-peer links with contacts (port 0: any free port); NULL or
   * "" keeps them off (the default). The address is announced to every contact inside the end-to-end
   * session, so turning this on shows contacts where this device is; messages then skip the relay while
   * both devices can reach each other. The host is the address contacts will dial (0.0.0.0 and :: are
   * refused). An address that does not parse or bind: CW_ERR_INVALID_ARGUMENT or CW_ERR_UNAVAILABLE from
   * cw_client_open_ex. */
  const char* direct_listen;
} cw_options;

/* cw_client_open with options (NULL options: the defaults, as cw_client_open). */
CW_EXPORT CW_NODISCARD cw_status cw_client_open_ex(const char* home_dir, const uint8_t* passphrase,
                                                   size_t passphrase_len, const char* relay_address,
                                                   const char* name, const cw_options* options,
                                                   cw_client** out_client);

/* Wipes every key the client holds in memory and drops the relay link; messages wait at the relay. Until
 * cw_client_unlock every other call returns CW_ERR_PERMISSION_DENIED. Idempotent. */
CW_EXPORT CW_NODISCARD cw_status cw_client_lock(cw_client* client);
/* Unlocks with the passphrase. CW_ERR_PERMISSION_DENIED for a wrong one (counted, with the keystore's
 * backoff: CW_ERR_UNAVAILABLE while it backs off). Blocks (Argon2id): not from a callback. */
CW_EXPORT CW_NODISCARD cw_status cw_client_unlock(cw_client* client, const uint8_t* passphrase, size_t len);
/* 1 while locked (or for NULL), else 0. */
CW_EXPORT int cw_client_is_locked(cw_client* client);

/* Called on the loop thread when the client locked itself (cw_options.auto_lock_after_ms). Ask for the
 * passphrase and call cw_client_unlock from another thread. */
typedef void (*cw_lock_fn)(void* user_data);
CW_EXPORT CW_NODISCARD cw_status cw_client_set_on_lock(cw_client* client, cw_lock_fn cb, void* user_data);

/* The contact's messages up to `up_to_sequence` (the sequence from cw_file_fn, or 1.. in arrival order) were
 * read: audited, and read receipts go to the contact. *out_marked (may be NULL) = how many were newly read. */
CW_EXPORT CW_NODISCARD cw_status cw_client_mark_read(cw_client* client, const char* contact,
                                                     uint64_t up_to_sequence, size_t* out_marked);

/* Called on the loop thread when a contact's receipt moved one of our messages (its sequence, as returned by
 * cw_client_send_file) to delivered (read == 0) or read (read == 1). */
typedef void (*cw_receipt_fn)(void* user_data, const char* contact, uint64_t sequence, int read);
CW_EXPORT CW_NODISCARD cw_status cw_client_set_on_receipt(cw_client* client, cw_receipt_fn cb, void* user_data);

/* ---- Files ------------------------------------------------------------------------------------------ */

/* Progress of a transfer: plaintext bytes done so far and in all (first 0, last the total). Runs on the
 * thread that called cw_client_send_file / cw_client_fetch_attachment, before that call returns. */
typedef void (*cw_progress_fn)(void* user_data, uint64_t done, uint64_t total);

/* Encrypts and uploads the file at `path`, then sends it to `contact` like a message. *out_sequence (may be
 * NULL) is its sequence in the conversation. Blocks until uploaded: not from a callback. Errors as
 * cw_client_send, plus CW_ERR_NOT_FOUND / CW_ERR_INVALID_ARGUMENT for a file that cannot be read. */
CW_EXPORT CW_NODISCARD cw_status cw_client_send_file(cw_client* client, const char* contact, const char* path,
                                                     cw_progress_fn progress, void* user_data,
                                                     uint64_t* out_sequence);
/* cw_client_send_file with a purpose label, checked as cw_client_send_for_purpose does before anything is
 * read or uploaded (a refused file puts nothing at the relay), and again when the message is queued. */
CW_EXPORT CW_NODISCARD cw_status cw_client_send_file_for_purpose(cw_client* client, const char* contact,
                                                                 const char* path, const char* purpose,
                                                                 cw_progress_fn progress, void* user_data,
                                                                 uint64_t* out_sequence);

/* Called on the loop thread when a file message arrived (its transcript row is stored; the file is still at
 * the relay: cw_client_fetch_attachment downloads it). `file_name` is valid only during the call. */
typedef void (*cw_file_fn)(void* user_data, const char* contact, uint64_t sequence, const char* file_name,
                           uint64_t size);
CW_EXPORT CW_NODISCARD cw_status cw_client_set_on_file(cw_client* client, cw_file_fn cb, void* user_data);

/* Downloads, checks and decrypts the file of message `sequence` with `contact` into `dest_path`, which must
 * not exist. CW_ERR_NOT_FOUND when that message is not a file; CW_ERR_TAMPERED when the download does not
 * check out (nothing is written then). Blocks: not from a callback. */
CW_EXPORT CW_NODISCARD cw_status cw_client_fetch_attachment(cw_client* client, const char* contact,
                                                            uint64_t sequence, const char* dest_path,
                                                            cw_progress_fn progress, void* user_data);

/* ---- Consent and export ----------------------------------------------------------------------------- */

/* The patient (this client) grants `contact` (the clinician) consent for `n_purposes` purpose labels
 * ("treatment", "billing", ...; at least one). `expires_at_ms` 0: until withdrawn. The receipt id comes
 * back in *out_receipt_id (may be NULL). CW_ERR_INVALID_ARGUMENT for a bad label. */
CW_EXPORT CW_NODISCARD cw_status cw_client_grant_consent(cw_client* client, const char* contact,
                                                         const char* const* purposes, size_t n_purposes,
                                                         int64_t expires_at_ms, cw_buffer** out_receipt_id);
/* Withdraws `n_purposes` purposes (0: all) of receipt `receipt_id`. CW_ERR_PERMISSION_DENIED when this
 * client is not the receipt's patient; CW_ERR_NOT_FOUND for an unknown receipt. */
CW_EXPORT CW_NODISCARD cw_status cw_client_withdraw_consent(cw_client* client, const char* receipt_id,
                                                            const char* const* purposes, size_t n_purposes);
/* Every consent receipt this client holds, as a JSON array of objects {"receipt_id", "contact",
 * "we_are_patient", "countersigned", "expires_at_ms", "purposes": {label: "given"|"withdrawn"|...}}. */
CW_EXPORT CW_NODISCARD cw_status cw_client_list_consents(cw_client* client, cw_buffer** out_json);

/* A signed export of everything this client holds (transcripts, consent, audit chain, erasures), checked
 * offline against this identity key. The bundle holds plaintext: the buffer is wiped when freed. */
CW_EXPORT CW_NODISCARD cw_status cw_client_export(cw_client* client, cw_buffer** out_bundle);

/* ---- Contacts, history and care-team groups -------------------------------------------------------- */

/* Every contact as a JSON array of objects {"name", "trust": "unknown"|"trusted"|"verified"|"changed",
 * "fingerprint" (hex of its identity key), "reachable" (its first message reached us: it can be written to),
 * "direct" (a direct link to it is up now)}. */
CW_EXPORT CW_NODISCARD cw_status cw_client_list_contacts(cw_client* client, cw_buffer** out_json);

/* Revokes at the relay the deposit token this device gave `contact` (in the invite it accepted, or in our
 * first message to it): the relay refuses the contact's messages from then on; sending to it still works.
 * CW_ERR_NOT_FOUND for an unknown contact, or one whose token this device does not know (already revoked,
 * or a contact on a library too old to say which invite it accepted). Needs the relay: blocks, not from a
 * callback. */
CW_EXPORT CW_NODISCARD cw_status cw_client_revoke_contact(cw_client* client, const char* contact);
/* Revokes as cw_client_revoke_contact, then forgets the contact; its conversation stays until
 * cw_client_erase_conversation. A contact whose token this device does not know is forgotten all the same;
 * one whose token the relay could not revoke (unreachable) is kept. Blocks, as above. */
CW_EXPORT CW_NODISCARD cw_status cw_client_remove_contact(cw_client* client, const char* contact);

/* Erases the conversation with `contact` for good: its key is destroyed (crypto-shredding), and a signed
 * erasure receipt enters the audit trail and goes to the contact. The erasure id comes back in
 * *out_erasure_id (may be NULL). */
CW_EXPORT CW_NODISCARD cw_status cw_client_erase_conversation(cw_client* client, const char* contact,
                                                              cw_buffer** out_erasure_id);

/* Sets the disappearing timer of the conversation with `contact` (`ms` 0: off): its messages are deleted that
 * long after they were sent or received. The clinic's retention floor may stretch a shorter timer: the one
 * in force comes back in *out_in_force_ms (may be NULL). */
CW_EXPORT CW_NODISCARD cw_status cw_client_set_disappearing(cw_client* client, const char* contact, int64_t ms,
                                                            int64_t* out_in_force_ms);

/* One stored message, as cw_client_history and cw_client_group_history hand it over. Every pointer is valid
 * only during the callback (the library wipes the body afterwards). A newer library may append fields: read
 * only those that struct_size covers. */
typedef struct cw_message_row {
  size_t struct_size;
  uint64_t sequence;      /* its place in the conversation (cw_client_fetch_attachment takes it for a file) */
  int outgoing;           /* 1: sent by this identity; 0: received */
  const char* sender;     /* the contact's name; this identity's own name for outgoing messages */
  int64_t sent_at_ms;     /* 0 when unknown */
  int64_t received_at_ms; /* 0 for outgoing messages */
  const uint8_t* body;    /* the text, or for a file its name */
  size_t body_len;
  int is_file;
  int status;             /* outgoing: 1 queued, 2 sent, 3 delivered, 4 read, 5 failed; received: 0 */
} cw_message_row;
typedef void (*cw_row_fn)(void* user_data, const cw_message_row* row);

/* Calls `fn` on the calling thread for each of the latest `max` messages with `contact` (0: none), oldest
 * first, and returns once it has seen them all. */
CW_EXPORT CW_NODISCARD cw_status cw_client_history(cw_client* client, const char* contact, size_t max, cw_row_fn fn,
                                                   void* user_data);

/* Called once per incoming care-team group message, after it is stored (as cw_message_fn), on the loop thread
 * (the rules of cw_client_set_on_message; group messages never reach the on_message callback). `group_id` is
 * 64 hex digits, `sender` the member who wrote it, `sequence` its place in the group's history. */
typedef void (*cw_group_message_fn)(void* user_data, const char* group_id, const char* sender, uint64_t sequence,
                                    const uint8_t* body, size_t len);
CW_EXPORT CW_NODISCARD cw_status cw_client_set_on_group_message(cw_client* client, cw_group_message_fn cb,
                                                                void* user_data);

/* Creates a care-team group administered by this identity with `n_members` contacts, each of which must
 * have a session with us (CW_ERR_NOT_FOUND / CW_ERR_NO_SESSION otherwise, and nothing is created). The
 * membership and this device's group key go to every member through the outbox. The group id comes back in
 * *out_group_id. `label` (may be NULL) stays on this device. *out_unreached (may be NULL) receives a JSON
 * object {"no_session": [names], "untrusted": [names], "unvouched": [names]}: "no_session", members who got
 * nothing (no 1:1 session on this device yet; they are caught up once they are contacts under the identity
 * key the group's admin lists for them); "untrusted", members whose identity change awaits acceptance, who
 * were sent the change under the identity still trusted (check the change); "unvouched", members whose
 * contact on this device has another identity key than the admin lists for them, who got nothing.
 * CW_ERR_NO_MEMORY from this and from cw_client_group_add / _remove may come after the change was made
 * (cw_client_list_groups tells). */
CW_EXPORT CW_NODISCARD cw_status cw_client_group_create(cw_client* client, const char* label,
                                                        const char* const* members, size_t n_members,
                                                        cw_buffer** out_group_id, cw_buffer** out_unreached);
/* Adds or removes a member (admin only: CW_ERR_PERMISSION_DENIED otherwise; CW_ERR_NOT_FOUND for a group we
 * are not in). Removing rotates the group's keys, so the removed member reads nothing sent afterwards.
 * *out_unreached as for cw_client_group_create. */
CW_EXPORT CW_NODISCARD cw_status cw_client_group_add(cw_client* client, const char* group_id, const char* member,
                                                     cw_buffer** out_unreached);
CW_EXPORT CW_NODISCARD cw_status cw_client_group_remove(cw_client* client, const char* group_id, const char* member,
                                                        cw_buffer** out_unreached);
/* Encrypts `len` bytes once with this device's group key and queues them for every other member. Gated per
 * member like cw_client_send_for_purpose (NULL purpose: "treatment"): on a clinic device, when any member
 * lacks consent for the purpose, CW_ERR_PERMISSION_DENIED and nothing is stored or sent. *out_sequence (may
 * be NULL) is the message's place in the group's history. */
CW_EXPORT CW_NODISCARD cw_status cw_client_group_send(cw_client* client, const char* group_id, const char* purpose,
                                                      const uint8_t* bytes, size_t len, uint64_t* out_sequence);
/* The groups this identity is or was in, as a JSON array of objects {"group_id", "label" (empty on members'
 * devices), "admin", "members": [names, this identity included; empty once we were removed], "active"
 * (false once we were removed: the history stays, nothing more arrives)}. */
CW_EXPORT CW_NODISCARD cw_status cw_client_list_groups(cw_client* client, cw_buffer** out_json);
/* As cw_client_history, for the group's conversation (also after we were removed). */
CW_EXPORT CW_NODISCARD cw_status cw_client_group_history(cw_client* client, const char* group_id, size_t max,
                                                         cw_row_fn fn, void* user_data);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* CIPHERWARD_CIPHERWARD_H_ */
