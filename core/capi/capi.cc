// The C API (include/cipherward/cipherward.h) over cw::runtime::Client. Every extern "C" function here
// catches everything: no exception and no C++ type crosses the boundary (STYLE.md, "Errors are values").
#include <sodium.h>

#include <algorithm>
#include <condition_variable>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <new>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#define CW_BUILDING_LIBRARY 1
#include "cipherward/cipherward.h"
#include "core/base/status.h"
#include "core/runtime/client.h"

#ifndef CW_VERSION_STRING
#error "CW_VERSION_STRING must be defined by the build"
#endif

struct cw_buffer {
  size_t size;
  uint8_t* data;  // size + 1 bytes; the last is a NUL not counted in size
};

namespace {

using cw::Status;
using cw::StatusCode;

// The callbacks a C caller set, read by the client's loop thread. Held by shared_ptr so the runtime's
// std::function can outlive nothing it points to, whatever the destruction order.
struct CallbackState {
  std::mutex mu;
  cw_message_fn on_message = nullptr;
  void* message_user_data = nullptr;
  cw_identity_change_fn on_identity_change = nullptr;
  void* identity_user_data = nullptr;
  cw_lock_fn on_lock = nullptr;
  void* lock_user_data = nullptr;
  cw_receipt_fn on_receipt = nullptr;
  void* receipt_user_data = nullptr;
  cw_file_fn on_file = nullptr;
  void* file_user_data = nullptr;
  cw_group_message_fn on_group_message = nullptr;
  void* group_message_user_data = nullptr;
  bool closed = false;  // cw_client_close began: no callback (progress included) is called any more
};

bool Closed(CallbackState& state) {
  std::lock_guard<std::mutex> lock(state.mu);
  return state.closed;
}

// Reads one (callback, user data) pair under the state's lock and calls it outside the lock, so a callback
// may set callbacks. Swallows everything: a callback handed to the runtime must not throw into its loop.
template <typename Fn, typename... Args>
void Fire(const std::weak_ptr<CallbackState>& weak, Fn CallbackState::*cb, void* CallbackState::*ud, Args... args) {
  try {
    auto st = weak.lock();
    if (!st) return;
    Fn fn;
    void* data;
    {
      std::lock_guard<std::mutex> lock(st->mu);
      if (st->closed) return;
      fn = (*st).*cb;
      data = (*st).*ud;
    }
    if (fn != nullptr) fn(data, args...);
  } catch (...) {
  }
}

// A C progress callback as the runtime's ProgressFn (empty when none was given); silent once the client is
// closing.
cw::runtime::ProgressFn Progress(const std::shared_ptr<CallbackState>& state, cw_progress_fn fn,
                                 void* user_data) {
  if (fn == nullptr) return {};
  return [state, fn, user_data](uint64_t done, uint64_t total) {
    if (!Closed(*state)) fn(user_data, done, total);
  };
}

// A C array of `n` strings (purpose labels, member names); false when it or one of them is NULL.
bool Strings(const char* const* items, size_t n, std::vector<std::string>* out) {
  if (items == nullptr && n > 0) return false;
  for (size_t i = 0; i < n; ++i) {
    if (items[i] == nullptr) return false;
    out->emplace_back(items[i]);
  }
  return true;
}

// A caller's purpose label; NULL is the default purpose ("treatment").
std::string PurposeOr(const char* purpose) {
  return purpose ? std::string(purpose) : std::string(cw::runtime::kDefaultPurpose);
}

cw_status ToC(StatusCode code) {
  switch (code) {
    case StatusCode::kOk: return CW_OK;
    case StatusCode::kInvalidArgument: return CW_ERR_INVALID_ARGUMENT;
    case StatusCode::kMalformed: return CW_ERR_MALFORMED;
    case StatusCode::kUnsupportedVersion: return CW_ERR_UNSUPPORTED_VERSION;
    case StatusCode::kBadSignature: return CW_ERR_BAD_SIGNATURE;
    case StatusCode::kTampered: return CW_ERR_TAMPERED;
    case StatusCode::kDuplicate: return CW_ERR_DUPLICATE;
    case StatusCode::kTooFarAhead: return CW_ERR_TOO_FAR_AHEAD;
    case StatusCode::kNoSession: return CW_ERR_NO_SESSION;
    case StatusCode::kUntrustedIdentity: return CW_ERR_UNTRUSTED_IDENTITY;
    case StatusCode::kNotFound: return CW_ERR_NOT_FOUND;
    case StatusCode::kAlreadyExists: return CW_ERR_ALREADY_EXISTS;
    case StatusCode::kPermissionDenied: return CW_ERR_PERMISSION_DENIED;
    case StatusCode::kResourceExhausted: return CW_ERR_RESOURCE_EXHAUSTED;
    case StatusCode::kUnavailable: return CW_ERR_UNAVAILABLE;
    case StatusCode::kInternal: return CW_ERR_INTERNAL;
    case StatusCode::kAborted: return CW_ERR_ABORTED;
    case StatusCode::kRejected:
      return CW_ERR_UNTRUSTED_IDENTITY;  // only inside the receive path
  }
  return CW_ERR_INTERNAL;
}
cw_status ToC(const Status& s) { return ToC(s.code()); }

// Copies `n` bytes into a new buffer, NUL-terminated. Null on allocation failure.
cw_buffer* NewBuffer(const void* data, size_t n) {
  auto* b = static_cast<cw_buffer*>(std::malloc(sizeof(cw_buffer)));
  if (b == nullptr) return nullptr;
  b->data = static_cast<uint8_t*>(std::malloc(n + 1));
  if (b->data == nullptr) {
    std::free(b);
    return nullptr;
  }
  if (n > 0) std::memcpy(b->data, data, n);
  b->data[n] = 0;
  b->size = n;
  return b;
}

cw_status ReturnString(const std::string& s, cw_buffer** out) {
  cw_buffer* b = NewBuffer(s.data(), s.size());
  if (b == nullptr) return CW_ERR_NO_MEMORY;
  *out = b;
  return CW_OK;
}

// ReturnString for text that names people (contacts, members, labels): the copy made here is wiped.
cw_status ReturnWiped(std::string s, cw_buffer** out) {
  const cw_status st = ReturnString(s, out);
  sodium_memzero(s.data(), s.size());
  return st;
}

// An invite code carries the deposit token that admits its holder: the copy made here is wiped.
cw_status ReturnInvite(cw::Result<std::string> code, cw_buffer** out) {
  if (!code) return ToC(code.error());
  return ReturnWiped(std::move(*code), out);
}

// Runs `fn` (returning cw_status) and turns any escaping exception into a status.
template <typename Fn>
cw_status Guard(Fn&& fn) noexcept {
  try {
    return fn();
  } catch (const std::bad_alloc&) {
    return CW_ERR_NO_MEMORY;
  } catch (...) {
    return CW_ERR_INTERNAL;
  }
}

std::string_view TrustName(cw::session::TrustState t) {
  switch (t) {
    case cw::session::TrustState::kUnknown: return "unknown";
    case cw::session::TrustState::kTrusted: return "trusted";
    case cw::session::TrustState::kVerified: return "verified";
    case cw::session::TrustState::kChanged: return "changed";
  }
  return "unknown";
}

// The members a group change did not reach, as the JSON the header describes (nothing when `out` is null).
cw_status ReturnUnreached(const cw::runtime::GroupChange& change, cw_buffer** out) {
  if (out == nullptr) return CW_OK;
  const nlohmann::json j = {{"no_session", change.missing_sessions},
                            {"untrusted", change.untrusted_members},
                            {"unvouched", change.unvouched_members}};
  return ReturnWiped(j.dump(), out);
}

// cw_client_group_add and cw_client_group_remove.
cw_status ChangeMember(cw_client* client, const char* group_id, const char* member, bool adding,
                       cw_buffer** out_unreached);

// A list the runtime returned, as a JSON array (one `to_json` object per item) in a wiped buffer.
template <typename T, typename ToJson>
cw_status ReturnJsonList(const cw::Result<std::vector<T>>& items, ToJson to_json, cw_buffer** out) {
  if (!items) return ToC(items.error());
  nlohmann::json list = nlohmann::json::array();
  for (const T& item : *items) list.push_back(to_json(item));
  return ReturnWiped(list.dump(), out);
}

// Hands each row to `fn` as a cw_message_row; the rows' bodies are SecretBytes, wiped when `rows` goes.
// Stops with CW_ERR_ABORTED once the client is closing (closed from a row callback, say).
cw_status EachRow(const cw::Result<std::vector<cw::storage::TranscriptMessage>>& rows, CallbackState& state,
                  cw_row_fn fn, void* user_data) {
  if (!rows) return ToC(rows.error());
  for (const auto& m : *rows) {
    if (Closed(state)) return CW_ERR_ABORTED;
    cw_message_row r{};
    r.struct_size = sizeof r;
    r.sequence = m.sequence;
    r.outgoing = m.direction == cw::storage::Direction::kOutgoing ? 1 : 0;
    r.sender = m.sender.c_str();
    r.sent_at_ms = m.sent_at_ms;
    r.received_at_ms = m.received_at_ms;
    r.body = m.body.reveal().data();
    r.body_len = m.body.size();
    r.is_file = m.attachments.empty() ? 0 : 1;
    r.status = r.outgoing ? static_cast<int>(m.status) : 0;
    fn(user_data, &r);
  }
  return CW_OK;
}

}  // namespace

struct cw_client {
  // Declared before `client` so it is destroyed after it: the loop thread is gone before the state is.
  std::shared_ptr<CallbackState> callbacks;
  std::unique_ptr<cw::runtime::Client> client;
  // Calls inside the library right now, so that cw_client_close can let them return before it frees what
  // they use; once closing, new calls get CW_ERR_ABORTED.
  std::mutex calls_mu;
  std::condition_variable calls_done;
  size_t calls = 0;
  bool closing = false;
};

namespace {

// The clients whose calls this thread is inside. A progress callback runs on the calling thread, inside the
// call: cw_client_close from there must not wait for that call to return.
thread_local std::vector<const cw_client*> t_inside;

// Guard for a call on `client`, counted (see cw_client::calls). A NULL client is left to `fn` to refuse.
template <typename Fn>
cw_status ClientGuard(cw_client* client, Fn&& fn) noexcept {
  if (client == nullptr) return Guard(fn);
  try {
    t_inside.reserve(t_inside.size() + 1);  // so the push_back below cannot throw
    std::lock_guard<std::mutex> lock(client->calls_mu);
    if (client->closing) return CW_ERR_ABORTED;
    ++client->calls;
  } catch (...) {
    return CW_ERR_INTERNAL;
  }
  t_inside.push_back(client);
  const cw_status s = Guard(fn);
  t_inside.pop_back();
  try {
    std::lock_guard<std::mutex> lock(client->calls_mu);
    if (--client->calls == 0 && client->closing) client->calls_done.notify_all();
  } catch (...) {
  }
  return s;
}

// Stops the client, waits for the calls inside it to return, and frees it.
void FinishClose(cw_client* client) noexcept {
  try {
    // Calls still inside (a sync waiting for the relay, an upload) return CW_ERR_ABORTED now; they may still
    // be using the client until they are out, so it is freed only then.
    client->client->Stop();
    std::unique_lock<std::mutex> lock(client->calls_mu);
    client->calls_done.wait(lock, [&] { return client->calls == 0; });
  } catch (...) {
  }
  try {
    client->client.reset();
  } catch (...) {
  }
  delete client;
}

// Stores a (callback, user data) pair; a NULL callback also forgets the user data.
template <typename Fn>
cw_status SetCallback(cw_client* client, Fn CallbackState::*field, void* CallbackState::*user_data_field, Fn cb,
                      void* user_data) {
  return ClientGuard(client, [&]() -> cw_status {
    if (client == nullptr) return CW_ERR_INVALID_ARGUMENT;
    std::lock_guard<std::mutex> lock(client->callbacks->mu);
    (*client->callbacks).*field = cb;
    (*client->callbacks).*user_data_field = cb ? user_data : nullptr;
    return CW_OK;
  });
}

cw_status ChangeMember(cw_client* client, const char* group_id, const char* member, bool adding,
                       cw_buffer** out_unreached) {
  return ClientGuard(client, [&]() -> cw_status {
    if (client == nullptr || group_id == nullptr || member == nullptr) return CW_ERR_INVALID_ARGUMENT;
    auto change = adding ? client->client->AddGroupMember(group_id, member)
                         : client->client->RemoveGroupMember(group_id, member);
    if (!change) return ToC(change.error());
    return ReturnUnreached(*change, out_unreached);
  });
}

}  // namespace

extern "C" {

CW_EXPORT const char* cw_version(void) { return CW_VERSION_STRING; }

CW_EXPORT const char* cw_strerror(int status) {
  switch (status) {
    case CW_OK: return "ok";
    case CW_ERR_INVALID_ARGUMENT: return "invalid argument";
    case CW_ERR_MALFORMED: return "malformed input";
    case CW_ERR_UNSUPPORTED_VERSION: return "unsupported version";
    case CW_ERR_BAD_SIGNATURE: return "bad signature";
    case CW_ERR_TAMPERED: return "data was tampered with";
    case CW_ERR_DUPLICATE: return "duplicate";
    case CW_ERR_TOO_FAR_AHEAD: return "message too far ahead";
    case CW_ERR_NO_SESSION: return "no session with this contact yet";
    case CW_ERR_UNTRUSTED_IDENTITY: return "contact's identity changed and is not yet accepted";
    case CW_ERR_NOT_FOUND: return "not found";
    case CW_ERR_ALREADY_EXISTS: return "already exists";
    case CW_ERR_PERMISSION_DENIED:
      return "permission denied (a wrong passphrase, a blocking call from a callback, "
             "or something this identity may not do)";
    case CW_ERR_RESOURCE_EXHAUSTED: return "resource exhausted";
    case CW_ERR_UNAVAILABLE: return "unavailable (relay unreachable or store busy); retry later";
    case CW_ERR_INTERNAL: return "internal error";
    case CW_ERR_ABORTED: return "aborted";
    case CW_ERR_NO_MEMORY: return "out of memory";
    default: return "unknown status";
  }
}

CW_EXPORT const uint8_t* cw_buffer_data(const cw_buffer* buffer) { return buffer ? buffer->data : nullptr; }
CW_EXPORT size_t cw_buffer_size(const cw_buffer* buffer) { return buffer ? buffer->size : 0; }
CW_EXPORT void cw_buffer_free(cw_buffer* buffer) {
  if (buffer == nullptr) return;
  sodium_memzero(buffer->data, buffer->size + 1);
  std::free(buffer->data);
  sodium_memzero(buffer, sizeof(*buffer));
  std::free(buffer);
}

CW_EXPORT cw_status cw_client_open(const char* home_dir, const uint8_t* passphrase, size_t passphrase_len,
                                   const char* relay_address, const char* name, cw_client** out_client) {
  return cw_client_open_ex(home_dir, passphrase, passphrase_len, relay_address, name, nullptr, out_client);
}

CW_EXPORT cw_status cw_client_open_ex(const char* home_dir, const uint8_t* passphrase, size_t passphrase_len,
                                      const char* relay_address, const char* name, const cw_options* options,
                                      cw_client** out_client) {
  return Guard([&]() -> cw_status {
    if (options != nullptr && options->struct_size < sizeof(size_t)) return CW_ERR_INVALID_ARGUMENT;
    // Only the fields the caller's struct holds are read (an older caller passes a smaller one).
    cw_options opts{};
    if (options != nullptr) std::memcpy(&opts, options, std::min(options->struct_size, sizeof opts));
    if (opts.auto_lock_after_ms < 0) return CW_ERR_INVALID_ARGUMENT;
    if (home_dir == nullptr || out_client == nullptr || (passphrase == nullptr && passphrase_len > 0)) {
      return CW_ERR_INVALID_ARGUMENT;
    }
    if (*home_dir == '\0' || passphrase_len == 0) return CW_ERR_INVALID_ARGUMENT;
    if (sodium_init() < 0) return CW_ERR_INTERNAL;
    auto handle = std::make_unique<cw_client>();
    handle->callbacks = std::make_shared<CallbackState>();
    auto make_options = [&]() {
      cw::runtime::ClientOptions o;
      o.auto_lock_after_ms = opts.auto_lock_after_ms;
      o.send_delivery_receipts = opts.no_delivery_receipts == 0;
      o.send_read_receipts = opts.no_read_receipts == 0;
      if (opts.direct_listen != nullptr) o.direct_listen = opts.direct_listen;
      std::weak_ptr<CallbackState> weak = handle->callbacks;
      o.callbacks.on_lock = [weak] { Fire(weak, &CallbackState::on_lock, &CallbackState::lock_user_data); };
      o.callbacks.on_receipt = [weak](const cw::runtime::ReceiptEvent& e) {
        Fire(weak, &CallbackState::on_receipt, &CallbackState::receipt_user_data, e.contact.c_str(), e.sequence,
             e.type == cw::wire::ReceiptType::kRead ? 1 : 0);
      };
      o.callbacks.on_file = [weak](const cw::runtime::IncomingFile& f) {
        Fire(weak, &CallbackState::on_file, &CallbackState::file_user_data, f.contact.c_str(), f.sequence,
             f.attachment.file_name.c_str(), f.attachment.size);
      };
      o.callbacks.on_message = [weak](const cw::runtime::IncomingMessage& m) {
        // A group text goes to its own callback: through on_message it would read as a 1:1 message.
        if (!m.group_id.empty()) {
          Fire(weak, &CallbackState::on_group_message, &CallbackState::group_message_user_data, m.group_id.c_str(),
               m.contact.c_str(), m.sequence, m.text.reveal().data(), m.text.size());
          return;
        }
        Fire(weak, &CallbackState::on_message, &CallbackState::message_user_data, m.contact.c_str(),
             m.text.reveal().data(), m.text.size());
      };
      o.callbacks.on_identity_change = [weak](const cw::runtime::IdentityChangeEvent& e) {
        Fire(weak, &CallbackState::on_identity_change, &CallbackState::identity_user_data, e.contact.c_str());
      };
      return o;
    };
    std::span<const uint8_t> pass(passphrase, passphrase_len);
    auto opened = cw::runtime::Client::Open(home_dir, pass, make_options());
    if (!opened && opened.error().code() == StatusCode::kNotFound) {
      if (name == nullptr || *name == '\0') return CW_ERR_INVALID_ARGUMENT;
      opened = cw::runtime::Client::Create(home_dir, name, pass, make_options());
    }
    if (!opened) return ToC(opened.error());
    handle->client = std::move(*opened);
    if (relay_address != nullptr) {
      Status s = handle->client->Register(relay_address);
      if (!s.ok()) return ToC(s);
    }
    if (!handle->client->RelayAddress().empty()) {
      Status s = handle->client->StartBackground();
      if (!s.ok()) return ToC(s);
    }
    *out_client = handle.release();
    return CW_OK;
  });
}

CW_EXPORT void cw_client_close(cw_client* client) {
  if (client == nullptr) return;
  bool from_callback = false;
  try {
    {
      std::lock_guard<std::mutex> lock(client->calls_mu);
      // A close already under way (another thread's, or a callback's racing it) frees the client: a second
      // one would free it twice (found in review).
      if (client->closing) return;
      client->closing = true;  // calls from now on return CW_ERR_ABORTED
    }
    {
      std::lock_guard<std::mutex> lock(client->callbacks->mu);
      client->callbacks->closed = true;
    }
    // From a callback, waiting here would wait for ourselves: the loop thread cannot stop or join itself, and
    // a progress callback's call cannot return while it runs. A helper finishes once they have.
    from_callback = client->client->OnCallbackThread() ||
                    std::find(t_inside.begin(), t_inside.end(), client) != t_inside.end();
    if (from_callback) {
      std::thread(FinishClose, client).detach();
      return;
    }
  } catch (...) {
    // No thread for the helper: the client stays closing (calls abort) and is never freed, rather than wait
    // for ourselves.
    if (from_callback) return;
  }
  FinishClose(client);
}

CW_EXPORT cw_status cw_client_name(cw_client* client, cw_buffer** out_name) {
  return ClientGuard(client, [&]() -> cw_status {
    if (client == nullptr || out_name == nullptr) return CW_ERR_INVALID_ARGUMENT;
    return ReturnString(client->client->name(), out_name);
  });
}

CW_EXPORT cw_status cw_client_invite(cw_client* client, cw_buffer** out_code) {
  return ClientGuard(client, [&]() -> cw_status {
    if (client == nullptr || out_code == nullptr) return CW_ERR_INVALID_ARGUMENT;
    return ReturnInvite(client->client->CreateInvite(), out_code);
  });
}

CW_EXPORT cw_status cw_client_invite_valid_for(cw_client* client, int64_t valid_for_ms, cw_buffer** out_code) {
  return ClientGuard(client, [&]() -> cw_status {
    if (client == nullptr || out_code == nullptr) return CW_ERR_INVALID_ARGUMENT;
    return ReturnInvite(client->client->CreateInviteValidFor(valid_for_ms), out_code);
  });
}

CW_EXPORT cw_status cw_client_invite_for_new_device(cw_client* client, const char* contact,
                                                    cw_buffer** out_code) {
  return ClientGuard(client, [&]() -> cw_status {
    if (client == nullptr || contact == nullptr || out_code == nullptr) return CW_ERR_INVALID_ARGUMENT;
    return ReturnInvite(client->client->CreateInviteForNewDevice(contact), out_code);
  });
}

CW_EXPORT cw_status cw_client_list_invites(cw_client* client, cw_buffer** out_json) {
  return ClientGuard(client, [&]() -> cw_status {
    if (client == nullptr || out_json == nullptr) return CW_ERR_INVALID_ARGUMENT;
    const auto to_json = [](const cw::runtime::InviteInfo& i) {
      return nlohmann::json{
          {"id", i.id}, {"created_ms", i.created_ms}, {"expires_ms", i.expires_ms}, {"for", i.for_contact}};
    };
    return ReturnJsonList(client->client->OpenInvites(), to_json, out_json);
  });
}

CW_EXPORT cw_status cw_client_cancel_invite(cw_client* client, const char* invite_id) {
  return ClientGuard(client, [&]() -> cw_status {
    if (client == nullptr || invite_id == nullptr) return CW_ERR_INVALID_ARGUMENT;
    return ToC(client->client->CancelInvite(invite_id));
  });
}

CW_EXPORT cw_status cw_client_accept(cw_client* client, const char* code, const uint8_t* first_message, size_t len,
                                     cw_buffer** out_contact) {
  return ClientGuard(client, [&]() -> cw_status {
    if (client == nullptr || code == nullptr || (first_message == nullptr && len > 0))
      return CW_ERR_INVALID_ARGUMENT;
    std::string text(reinterpret_cast<const char*>(first_message), first_message ? len : 0);
    auto contact = client->client->AcceptInvite(code, text);
    sodium_memzero(text.data(), text.size());
    if (!contact) return ToC(contact.error());
    if (out_contact != nullptr) return ReturnString(*contact, out_contact);
    return CW_OK;
  });
}

CW_EXPORT cw_status cw_client_send(cw_client* client, const char* contact_name, const uint8_t* bytes, size_t len) {
  return cw_client_send_for_purpose(client, contact_name, nullptr, bytes, len);
}

CW_EXPORT cw_status cw_client_send_for_purpose(cw_client* client, const char* contact_name, const char* purpose,
                                               const uint8_t* bytes, size_t len) {
  return ClientGuard(client, [&]() -> cw_status {
    if (client == nullptr || contact_name == nullptr || (bytes == nullptr && len > 0))
      return CW_ERR_INVALID_ARGUMENT;
    std::string text(reinterpret_cast<const char*>(bytes), bytes ? len : 0);
    auto seq = client->client->SendText(contact_name, text, PurposeOr(purpose));
    sodium_memzero(text.data(), text.size());
    return seq ? CW_OK : ToC(seq.error());
  });
}

CW_EXPORT cw_status cw_client_set_clinic(cw_client* client, int on) {
  return ClientGuard(client, [&]() -> cw_status {
    if (client == nullptr) return CW_ERR_INVALID_ARGUMENT;
    auto policy = client->client->GetCompliancePolicy();
    if (!policy) return ToC(policy.error());
    policy->clinic = on != 0;
    const Status s = client->client->SetCompliancePolicy(*policy);
    return s.ok() ? CW_OK : ToC(s);
  });
}

CW_EXPORT cw_status cw_client_sync(cw_client* client) {
  return ClientGuard(client, [&]() -> cw_status {
    if (client == nullptr) return CW_ERR_INVALID_ARGUMENT;
    auto r = client->client->Sync();
    return r ? CW_OK : ToC(r.error());
  });
}

CW_EXPORT cw_status cw_client_set_on_message(cw_client* client, cw_message_fn cb, void* user_data) {
  return SetCallback(client, &CallbackState::on_message, &CallbackState::message_user_data, cb, user_data);
}

CW_EXPORT cw_status cw_client_set_on_identity_change(cw_client* client, cw_identity_change_fn cb, void* user_data) {
  return SetCallback(client, &CallbackState::on_identity_change, &CallbackState::identity_user_data, cb, user_data);
}

CW_EXPORT cw_status cw_client_safety_number(cw_client* client, const char* contact, cw_buffer** out_digits) {
  return ClientGuard(client, [&]() -> cw_status {
    if (client == nullptr || contact == nullptr || out_digits == nullptr) return CW_ERR_INVALID_ARGUMENT;
    auto sn = client->client->GetSafetyNumber(contact);
    if (!sn) return ToC(sn.error());
    return ReturnString(sn->digits, out_digits);
  });
}

CW_EXPORT cw_status cw_client_verify(cw_client* client, const char* contact, int verified) {
  return ClientGuard(client, [&]() -> cw_status {
    if (client == nullptr || contact == nullptr) return CW_ERR_INVALID_ARGUMENT;
    return ToC(client->client->SetVerified(contact, verified != 0));
  });
}

CW_EXPORT cw_status cw_client_accept_identity_change(cw_client* client, const char* contact) {
  return ClientGuard(client, [&]() -> cw_status {
    if (client == nullptr || contact == nullptr) return CW_ERR_INVALID_ARGUMENT;
    return ToC(client->client->AcceptIdentityChange(contact));
  });
}

CW_EXPORT cw_status cw_client_reject_identity_change(cw_client* client, const char* contact) {
  return ClientGuard(client, [&]() -> cw_status {
    if (client == nullptr || contact == nullptr) return CW_ERR_INVALID_ARGUMENT;
    return ToC(client->client->RejectIdentityChange(contact));
  });
}

CW_EXPORT cw_status cw_client_reconsider_identity_change(cw_client* client, const char* contact,
                                                         cw_buffer** out_safety_number) {
  if (out_safety_number != nullptr) *out_safety_number = nullptr;
  return ClientGuard(client, [&]() -> cw_status {
    if (client == nullptr || contact == nullptr) return CW_ERR_INVALID_ARGUMENT;
    auto sn = client->client->ReconsiderIdentityChange(contact);
    if (!sn) return ToC(sn.error());
    return out_safety_number == nullptr ? CW_OK : ReturnString(sn->digits, out_safety_number);
  });
}

// ---- Options, lock and receipts

CW_EXPORT cw_status cw_client_lock(cw_client* client) {
  return ClientGuard(client, [&]() -> cw_status {
    if (client == nullptr) return CW_ERR_INVALID_ARGUMENT;
    return ToC(client->client->Lock());
  });
}

CW_EXPORT cw_status cw_client_unlock(cw_client* client, const uint8_t* passphrase, size_t len) {
  return ClientGuard(client, [&]() -> cw_status {
    if (client == nullptr || passphrase == nullptr || len == 0) return CW_ERR_INVALID_ARGUMENT;
    return ToC(client->client->Unlock(std::span<const uint8_t>(passphrase, len)));
  });
}

CW_EXPORT int cw_client_is_locked(cw_client* client) {
  if (client == nullptr) return 1;
  int locked = 1;
  (void)ClientGuard(client, [&]() -> cw_status {
    locked = client->client->locked() ? 1 : 0;
    return CW_OK;
  });
  return locked;
}

CW_EXPORT cw_status cw_client_set_on_lock(cw_client* client, cw_lock_fn cb, void* user_data) {
  return SetCallback(client, &CallbackState::on_lock, &CallbackState::lock_user_data, cb, user_data);
}

CW_EXPORT cw_status cw_client_mark_read(cw_client* client, const char* contact, uint64_t up_to_sequence,
                                        size_t* out_marked) {
  return ClientGuard(client, [&]() -> cw_status {
    if (client == nullptr || contact == nullptr) return CW_ERR_INVALID_ARGUMENT;
    auto n = client->client->MarkRead(contact, up_to_sequence);
    if (!n) return ToC(n.error());
    if (out_marked != nullptr) *out_marked = *n;
    return CW_OK;
  });
}

CW_EXPORT cw_status cw_client_set_on_receipt(cw_client* client, cw_receipt_fn cb, void* user_data) {
  return SetCallback(client, &CallbackState::on_receipt, &CallbackState::receipt_user_data, cb, user_data);
}

// ---- Files

CW_EXPORT cw_status cw_client_send_file(cw_client* client, const char* contact, const char* path,
                                        cw_progress_fn progress, void* user_data, uint64_t* out_sequence) {
  return cw_client_send_file_for_purpose(client, contact, path, nullptr, progress, user_data, out_sequence);
}

CW_EXPORT cw_status cw_client_send_file_for_purpose(cw_client* client, const char* contact, const char* path,
                                                    const char* purpose, cw_progress_fn progress, void* user_data,
                                                    uint64_t* out_sequence) {
  return ClientGuard(client, [&]() -> cw_status {
    if (client == nullptr || contact == nullptr || path == nullptr) return CW_ERR_INVALID_ARGUMENT;
    auto seq = client->client->SendFile(contact, path, PurposeOr(purpose),
                                        Progress(client->callbacks, progress, user_data));
    if (!seq) return ToC(seq.error());
    if (out_sequence != nullptr) *out_sequence = *seq;
    return CW_OK;
  });
}

CW_EXPORT cw_status cw_client_set_on_file(cw_client* client, cw_file_fn cb, void* user_data) {
  return SetCallback(client, &CallbackState::on_file, &CallbackState::file_user_data, cb, user_data);
}

CW_EXPORT cw_status cw_client_fetch_attachment(cw_client* client, const char* contact, uint64_t sequence,
                                               const char* dest_path, cw_progress_fn progress, void* user_data) {
  return ClientGuard(client, [&]() -> cw_status {
    if (client == nullptr || contact == nullptr || dest_path == nullptr) return CW_ERR_INVALID_ARGUMENT;
    // The row by its sequence: a conversation's history is bounded by what the device keeps.
    auto h = client->client->History(contact, SIZE_MAX);
    if (!h) return ToC(h.error());
    for (const auto& row : *h) {
      if (row.sequence != sequence) continue;
      auto a = cw::runtime::Client::AttachmentOf(row);
      if (!a) return ToC(a.error());
      return ToC(
          client->client->FetchAttachment(*a, dest_path, Progress(client->callbacks, progress, user_data)));
    }
    return CW_ERR_NOT_FOUND;
  });
}

// ---- Consent and export

CW_EXPORT cw_status cw_client_grant_consent(cw_client* client, const char* contact, const char* const* purposes,
                                            size_t n_purposes, int64_t expires_at_ms, cw_buffer** out_receipt_id) {
  return ClientGuard(client, [&]() -> cw_status {
    if (client == nullptr || contact == nullptr || n_purposes == 0 || expires_at_ms < 0)
      return CW_ERR_INVALID_ARGUMENT;
    cw::runtime::ConsentGrant grant;
    if (!Strings(purposes, n_purposes, &grant.purposes)) return CW_ERR_INVALID_ARGUMENT;
    grant.expires_at_ms = expires_at_ms;
    auto id = client->client->GrantConsent(contact, grant);
    if (!id) return ToC(id.error());
    if (out_receipt_id != nullptr) return ReturnString(*id, out_receipt_id);
    return CW_OK;
  });
}

CW_EXPORT cw_status cw_client_withdraw_consent(cw_client* client, const char* receipt_id,
                                               const char* const* purposes, size_t n_purposes) {
  return ClientGuard(client, [&]() -> cw_status {
    if (client == nullptr || receipt_id == nullptr) return CW_ERR_INVALID_ARGUMENT;
    std::vector<std::string> labels;
    if (!Strings(purposes, n_purposes, &labels)) return CW_ERR_INVALID_ARGUMENT;
    return ToC(client->client->WithdrawConsent(receipt_id, labels));
  });
}

CW_EXPORT cw_status cw_client_list_consents(cw_client* client, cw_buffer** out_json) {
  return ClientGuard(client, [&]() -> cw_status {
    if (client == nullptr || out_json == nullptr) return CW_ERR_INVALID_ARGUMENT;
    const auto to_json = [](const cw::runtime::ConsentRecord& r) {
      nlohmann::json purposes = nlohmann::json::object();
      for (const auto& [label, state] : r.purposes) purposes[label] = std::string(cw::compliance::ConsentStateName(state));
      return nlohmann::json{{"receipt_id", r.receipt_id},
                            {"contact", r.contact},
                            {"we_are_patient", r.we_are_patient},
                            {"countersigned", r.countersigned},
                            {"expires_at_ms", r.expires_at_ms},
                            {"purposes", purposes}};
    };
    return ReturnJsonList(client->client->ConsentReceipts(), to_json, out_json);
  });
}

CW_EXPORT cw_status cw_client_export(cw_client* client, cw_buffer** out_bundle) {
  return ClientGuard(client, [&]() -> cw_status {
    if (client == nullptr || out_bundle == nullptr) return CW_ERR_INVALID_ARGUMENT;
    auto bundle = client->client->ExportSigned();
    if (!bundle) return ToC(bundle.error());
    cw_buffer* b = NewBuffer(bundle->data(), bundle->size());
    sodium_memzero(bundle->data(), bundle->size());
    if (b == nullptr) return CW_ERR_NO_MEMORY;
    *out_bundle = b;
    return CW_OK;
  });
}

// ---- Contacts, history and groups

CW_EXPORT cw_status cw_client_list_contacts(cw_client* client, cw_buffer** out_json) {
  return ClientGuard(client, [&]() -> cw_status {
    if (client == nullptr || out_json == nullptr) return CW_ERR_INVALID_ARGUMENT;
    const auto to_json = [](const cw::runtime::ContactInfo& c) {
      return nlohmann::json{{"name", c.name},
                            {"trust", std::string(TrustName(c.trust))},
                            {"fingerprint", c.fingerprint},
                            {"reachable", c.reachable},
                            {"direct", c.direct}};
    };
    return ReturnJsonList(client->client->Contacts(), to_json, out_json);
  });
}

CW_EXPORT cw_status cw_client_revoke_contact(cw_client* client, const char* contact) {
  return ClientGuard(client, [&]() -> cw_status {
    if (client == nullptr || contact == nullptr) return CW_ERR_INVALID_ARGUMENT;
    return ToC(client->client->RevokeContact(contact));
  });
}

CW_EXPORT cw_status cw_client_remove_contact(cw_client* client, const char* contact) {
  return ClientGuard(client, [&]() -> cw_status {
    if (client == nullptr || contact == nullptr) return CW_ERR_INVALID_ARGUMENT;
    return ToC(client->client->RemoveContact(contact));
  });
}

CW_EXPORT cw_status cw_client_erase_conversation(cw_client* client, const char* contact, cw_buffer** out_erasure_id) {
  return ClientGuard(client, [&]() -> cw_status {
    if (client == nullptr || contact == nullptr) return CW_ERR_INVALID_ARGUMENT;
    auto id = client->client->EraseConversation(contact);
    if (!id) return ToC(id.error());
    return out_erasure_id == nullptr ? CW_OK : ReturnString(*id, out_erasure_id);
  });
}

CW_EXPORT cw_status cw_client_set_disappearing(cw_client* client, const char* contact, int64_t ms,
                                               int64_t* out_in_force_ms) {
  return ClientGuard(client, [&]() -> cw_status {
    if (client == nullptr || contact == nullptr || ms < 0) return CW_ERR_INVALID_ARGUMENT;
    auto in_force = client->client->SetDisappearingTimer(contact, ms);
    if (!in_force) return ToC(in_force.error());
    if (out_in_force_ms != nullptr) *out_in_force_ms = *in_force;
    return CW_OK;
  });
}

CW_EXPORT cw_status cw_client_history(cw_client* client, const char* contact, size_t max, cw_row_fn fn,
                                      void* user_data) {
  return ClientGuard(client, [&]() -> cw_status {
    if (client == nullptr || contact == nullptr || fn == nullptr) return CW_ERR_INVALID_ARGUMENT;
    return EachRow(client->client->History(contact, max), *client->callbacks, fn, user_data);
  });
}

CW_EXPORT cw_status cw_client_set_on_group_message(cw_client* client, cw_group_message_fn cb, void* user_data) {
  return SetCallback(client, &CallbackState::on_group_message, &CallbackState::group_message_user_data, cb, user_data);
}

CW_EXPORT cw_status cw_client_group_create(cw_client* client, const char* label, const char* const* members,
                                           size_t n_members, cw_buffer** out_group_id, cw_buffer** out_unreached) {
  return ClientGuard(client, [&]() -> cw_status {
    if (client == nullptr || out_group_id == nullptr || n_members == 0) return CW_ERR_INVALID_ARGUMENT;
    std::vector<std::string> names;
    if (!Strings(members, n_members, &names)) return CW_ERR_INVALID_ARGUMENT;
    auto change = client->client->CreateGroup(label ? label : "", names);
    if (!change) return ToC(change.error());
    cw_buffer* id = nullptr;
    if (cw_status st = ReturnString(change->group_id, &id); st != CW_OK) return st;
    if (cw_status st = ReturnUnreached(*change, out_unreached); st != CW_OK) {
      cw_buffer_free(id);
      return st;
    }
    *out_group_id = id;
    return CW_OK;
  });
}

CW_EXPORT cw_status cw_client_group_add(cw_client* client, const char* group_id, const char* member,
                                        cw_buffer** out_unreached) {
  return ChangeMember(client, group_id, member, /*adding=*/true, out_unreached);
}

CW_EXPORT cw_status cw_client_group_remove(cw_client* client, const char* group_id, const char* member,
                                           cw_buffer** out_unreached) {
  return ChangeMember(client, group_id, member, /*adding=*/false, out_unreached);
}

CW_EXPORT cw_status cw_client_group_send(cw_client* client, const char* group_id, const char* purpose,
                                         const uint8_t* bytes, size_t len, uint64_t* out_sequence) {
  return ClientGuard(client, [&]() -> cw_status {
    if (client == nullptr || group_id == nullptr || (bytes == nullptr && len > 0))
      return CW_ERR_INVALID_ARGUMENT;
    std::string text(reinterpret_cast<const char*>(bytes), bytes ? len : 0);
    auto seq =
        client->client->SendGroupText(group_id, text, PurposeOr(purpose));
    sodium_memzero(text.data(), text.size());
    if (!seq) return ToC(seq.error());
    if (out_sequence != nullptr) *out_sequence = *seq;
    return CW_OK;
  });
}

CW_EXPORT cw_status cw_client_list_groups(cw_client* client, cw_buffer** out_json) {
  return ClientGuard(client, [&]() -> cw_status {
    if (client == nullptr || out_json == nullptr) return CW_ERR_INVALID_ARGUMENT;
    const auto to_json = [](const cw::runtime::GroupInfo& g) {
      return nlohmann::json{
          {"group_id", g.id}, {"label", g.label}, {"admin", g.admin}, {"members", g.members}, {"active", g.active}};
    };
    return ReturnJsonList(client->client->Groups(), to_json, out_json);
  });
}

CW_EXPORT cw_status cw_client_group_history(cw_client* client, const char* group_id, size_t max, cw_row_fn fn,
                                            void* user_data) {
  return ClientGuard(client, [&]() -> cw_status {
    if (client == nullptr || group_id == nullptr || fn == nullptr) return CW_ERR_INVALID_ARGUMENT;
    return EachRow(client->client->GroupHistory(group_id, max), *client->callbacks, fn, user_data);
  });
}

}  // extern "C"
