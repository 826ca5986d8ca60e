// cipherward: the command-line client. Each command opens the identity in --home with the passphrase, does
// one thing through core/runtime's Client, and exits; `chat` stays and talks.
//
//   cipherward [--home DIR] [--json] [--passphrase-file FILE] [--relay cw://KEY@HOST:PORT] [--direct HOST:PORT]
//              COMMAND ...
//
// The passphrase comes from --passphrase-file, else the CW_PASSPHRASE environment variable (for scripts),
// else the terminal (echo off). Every command prints human text, or one JSON object with --json.
#include <fcntl.h>
#include <readline/history.h>
#include <readline/readline.h>
#include <sys/select.h>
#include <sys/stat.h>
#include <termios.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <deque>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <iterator>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "cli-demo/files.h"
#include "cli-demo/groups.h"
#include "core/base/random.h"
#include "core/compliance/export_bundle.h"
#include "core/runtime/client.h"
#include "core/runtime/codec.h"
#include "core/runtime/relay_stats.h"
#include "relay/protocol.h"
#include "transport/transport.h"

namespace {

using cw::Result;
using cw::SecretBytes;
using cw::Status;
using cw::StatusCode;
using cw::runtime::Client;
using json = nlohmann::json;

struct Globals {
  std::string home;
  bool json = false;
  std::string passphrase_file;
  std::string relay;
  int64_t timeout_ms = 15'000;
  std::string direct;  // ClientOptions::direct_listen
};
Globals g;

std::string Text(const SecretBytes& b) { return std::string(b.reveal().begin(), b.reveal().end()); }

// `ms` (since the epoch) in local time, as strftime's `format` says; "--:--" when unknown (0).
std::string LocalTime(int64_t ms, const char* format) {
  if (ms <= 0) return "--:--";
  std::time_t t = static_cast<std::time_t>(ms / 1000);
  std::tm tm{};
  localtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, format, &tm);
  return buf;
}
std::string TimeOf(int64_t ms) { return LocalTime(ms, "%H:%M:%S"); }
std::string DateTimeOf(int64_t ms) { return LocalTime(ms, "%Y-%m-%d %H:%M"); }

std::string Hint(const Status& s) {
  switch (s.code()) {
    case StatusCode::kUntrustedIdentity:
      return " (the contact's safety number changed: compare it with `verify`, then `verify --accept-change` "
             "if it matches theirs, `verify --reject-change` if not)";
    case StatusCode::kUnavailable:
      return " (is the relay running? queued messages stay in the outbox and go out next time)";
    case StatusCode::kNotFound:
      // A missing file or attachment says so itself.
      if (s.message().find("file") != std::string::npos || s.message().find("attachment") != std::string::npos) return "";
      return " (no such identity or contact; `init` creates an identity, `contacts` lists contacts)";
    default:
      return "";
  }
}

int Fail(const Status& s, const std::string& what) {
  if (g.json) {
    std::cout << json{{"ok", false}, {"error", what + ": " + s.message()}, {"code", std::string(cw::StatusCodeName(s.code()))}}
              << "\n";
  } else {
    std::cerr << "cipherward: " << what << ": " << s.message() << Hint(s) << "\n";
  }
  return 1;
}

void Print(const json& j, const std::string& human) {
  if (g.json) {
    json out = j;
    out["ok"] = true;
    std::cout << out << "\n";
  } else if (!human.empty()) {
    std::cout << human;
    if (human.back() != '\n') std::cout << "\n";
  }
  std::cout.flush();
}

// ----- passphrase

std::string ReadTty(const char* prompt) {
  int fd = ::open("/dev/tty", O_RDWR | O_CLOEXEC);
  if (fd < 0) return "";
  (void)!::write(fd, prompt, std::strlen(prompt));
  termios old{};
  const bool tty = ::tcgetattr(fd, &old) == 0;
  if (tty) {
    termios quiet = old;
    quiet.c_lflag &= ~static_cast<tcflag_t>(ECHO);
    ::tcsetattr(fd, TCSAFLUSH, &quiet);
  }
  std::string line;
  char c;
  while (::read(fd, &c, 1) == 1 && c != '\n') line.push_back(c);
  if (tty) ::tcsetattr(fd, TCSAFLUSH, &old);
  (void)!::write(fd, "\n", 1);
  ::close(fd);
  return line;
}

Result<SecretBytes> Passphrase(bool confirm) {
  std::string p;
  if (!g.passphrase_file.empty()) {
    std::ifstream in(g.passphrase_file);
    if (!in) return cw::Error(StatusCode::kNotFound, "cannot read the passphrase file");
    std::getline(in, p);
  } else if (const char* env = std::getenv("CW_PASSPHRASE"); env && *env) {
    p = env;
  } else {
    p = ReadTty("Passphrase: ");
    if (confirm) {
      std::string again = ReadTty("Passphrase again: ");
      const bool same = again == p;
      sodium_memzero(again.data(), again.size());
      if (!same) {
        sodium_memzero(p.data(), p.size());
        return cw::Error(StatusCode::kInvalidArgument, "the passphrases differ");
      }
    }
  }
  if (!p.empty() && p.back() == '\r') p.pop_back();
  if (p.empty()) return cw::Error(StatusCode::kInvalidArgument, "empty passphrase (use the terminal, --passphrase-file or CW_PASSPHRASE)");
  SecretBytes out(cw::AsBytes(p));
  sodium_memzero(p.data(), p.size());
  return out;
}

Result<std::unique_ptr<Client>> OpenClient(cw::runtime::ClientOptions options = {}) {
  CW_ASSIGN_OR_RETURN(SecretBytes pass, Passphrase(false));
  options.direct_listen = g.direct;
  auto c = Client::Open(g.home, pass.reveal(), std::move(options));
  if (!c && c.error().code() == StatusCode::kPermissionDenied) {
    return cw::Error(StatusCode::kPermissionDenied, "wrong passphrase");
  }
  return c;
}

// Registers with --relay when given and not yet registered.
Status MaybeRegister(Client& c) {
  if (g.relay.empty() || c.RelayAddress() == g.relay) return Status::Ok();
  return c.Register(g.relay, g.timeout_ms);
}

const char* TrustName(cw::session::TrustState t) {
  switch (t) {
    case cw::session::TrustState::kTrusted: return "trusted";
    case cw::session::TrustState::kVerified: return "verified";
    case cw::session::TrustState::kChanged: return "CHANGED";
    default: return "unknown";
  }
}

std::string Grouped(const std::string& digits) {
  std::string out;
  for (size_t i = 0; i < digits.size(); ++i) {
    if (i && i % 5 == 0) out += (i % 30 == 0) ? "\n    " : " ";
    out += digits[i];
  }
  return out;
}

json MessageJson(const cw::storage::TranscriptMessage& m) {
  json file;  // null for a text
  if (auto a = Client::AttachmentOf(m)) file = json{{"name", a->file_name}, {"size", a->size}, {"media_type", a->media_type}};
  return json{{"sequence", m.sequence},
              {"file", file},
              {"direction", std::string(cw::storage::DirectionName(m.direction))},
              {"sender", m.sender},
              {"sent_at_ms", m.sent_at_ms},
              {"received_at_ms", m.received_at_ms},
              {"status", std::string(cw::storage::MessageStatusName(m.status))},
              {"text", Text(m.body)}};
}

std::string MessageLine(const cw::storage::TranscriptMessage& m) {
  const bool out = m.direction == cw::storage::Direction::kOutgoing;
  std::string line = "[" + TimeOf(out ? m.sent_at_ms : m.received_at_ms) + "] " + m.sender + ": " + Text(m.body);
  // The sequence is what `fetch <contact> <sequence>` takes to save the file again.
  if (auto a = Client::AttachmentOf(m)) line += "  [file #" + std::to_string(m.sequence) + ", " + cw::cli::HumanSize(a->size) + "]";
  if (out) line += "  (" + std::string(cw::storage::MessageStatusName(m.status)) + ")";
  return line;
}

// ----- commands

int CmdInit(const std::string& name, const std::string& kdf) {
  auto pass = Passphrase(true);
  if (!pass) return Fail(pass.error(), "init");
  cw::runtime::ClientOptions o;
  if (kdf == "interactive") {
    o.keystore.argon2_opslimit = crypto_pwhash_OPSLIMIT_INTERACTIVE;
    o.keystore.argon2_memlimit = crypto_pwhash_MEMLIMIT_INTERACTIVE;
  } else if (kdf != "moderate") {
    return Fail(Status(StatusCode::kInvalidArgument, "--kdf is moderate or interactive"), "init");
  }
  auto c = Client::Create(g.home, name, pass->reveal(), std::move(o));
  if (!c) return Fail(c.error(), "init");
  if (Status s = MaybeRegister(**c); !s.ok()) return Fail(s, "register with the relay");
  const std::string relay = (*c)->RelayAddress();
  Print(json{{"name", name}, {"home", g.home}, {"fingerprint", (*c)->Fingerprint()}, {"relay", relay}},
        "Created identity '" + name + "' in " + g.home + "\n  identity key " + (*c)->Fingerprint() +
            (relay.empty() ? "\n  not registered with a relay yet (pass --relay to invite or accept)"
                           : "\n  registered with " + relay));
  return 0;
}

std::string ExpiryOf(int64_t expires_ms) { return expires_ms == 0 ? "never expires" : "expires " + DateTimeOf(expires_ms); }

int CmdInvite(int64_t valid_hours, const std::string& for_contact) {
  // Checked here, not only by the client: valid_hours * 3600 * 1000 could overflow.
  constexpr int64_t kMaxHours = cw::relay::kMaxClaimWithinMillis / 3'600'000;
  if (valid_hours < 0 || valid_hours > kMaxHours) {
    return Fail(Status(StatusCode::kInvalidArgument,
                       "--valid-hours is 0 (never expires) to " + std::to_string(kMaxHours) + " (a year)"),
                "invite");
  }
  auto c = OpenClient();
  if (!c) return Fail(c.error(), "open");
  if (Status s = MaybeRegister(**c); !s.ok()) return Fail(s, "register with the relay");
  auto code = for_contact.empty()
                  ? (*c)->CreateInviteValidFor(valid_hours * 3600 * 1000, g.timeout_ms)
                  : (*c)->CreateInviteForNewDevice(for_contact, valid_hours * 3600 * 1000, g.timeout_ms);
  if (!code) return Fail(code.error(), "invite");
  auto invite = cw::runtime::DecodeInvite(*code);
  if (!invite) return Fail(invite.error(), "invite");
  const std::string id = cw::runtime::InviteIdOf(invite->card.token);
  int64_t expires = 0;
  if (auto open = (*c)->OpenInvites()) {
    for (const auto& i : *open) {
      if (i.id == id) expires = i.expires_ms;
    }
  }
  Print(json{{"code", *code}, {"id", id}, {"expires_ms", expires}, {"for", for_contact}},
        g.json ? "" : *code);
  if (!g.json) {
    if (for_contact.empty()) {
      std::cerr << "Give this code to one new contact only (it lets them write to you); they run: cipherward "
                   "accept <code>\n";
    } else {
      std::cerr << "Give this code to " << for_contact
                << " only, for their new device; they run there: cipherward "
                << "accept <code>. Compare safety numbers before you accept the new key (verify "
                   "--accept-change).\n";
    }
    std::cerr << "Invite " << id << " " << ExpiryOf(expires)
              << " (cancel it with: cipherward invites --cancel " << id << ")\n";
  }
  return 0;
}

int CmdInvites(const std::string& cancel) {
  auto c = OpenClient();
  if (!c) return Fail(c.error(), "open");
  if (!cancel.empty()) {
    if (Status s = (*c)->CancelInvite(cancel, g.timeout_ms); !s.ok()) return Fail(s, "cancel the invite");
  }
  auto open = (*c)->OpenInvites();
  if (!open) return Fail(open.error(), "invites");
  json arr = json::array();
  std::string human = cancel.empty() ? "" : "Cancelled invite " + cancel + ": its code admits nobody now.\n";
  for (const auto& i : *open) {
    arr.push_back(json{
        {"id", i.id}, {"created_ms", i.created_ms}, {"expires_ms", i.expires_ms}, {"for", i.for_contact}});
    human += i.id + "  made " + (i.created_ms == 0 ? "before invites expired" : DateTimeOf(i.created_ms)) +
             ", " + ExpiryOf(i.expires_ms) +
             (i.for_contact.empty() ? ", for a new contact" : ", for " + i.for_contact + "'s new device") +
             "\n";
  }
  if (open->empty()) human += "No open invites.";
  Print(json{{"invites", arr}, {"cancelled", cancel}}, human);
  return 0;
}

int CmdRevoke(const std::string& contact, bool remove) {
  auto c = OpenClient();
  if (!c) return Fail(c.error(), "open");
  const Status s = remove ? (*c)->RemoveContact(contact, g.timeout_ms) : (*c)->RevokeContact(contact, g.timeout_ms);
  if (!s.ok()) return Fail(s, remove ? "remove" : "revoke");
  Print(json{{"contact", contact}, {"revoked", true}, {"removed", remove}},
        remove ? "Removed " + contact + ": the relay refuses their messages, and the contact is forgotten (the "
                     "conversation stays until `erase`)."
               : "Revoked " + contact + ": the relay refuses their messages from now on; you can still write to them.");
  return 0;
}

int CmdAccept(const std::string& code, const std::string& message) {
  auto c = OpenClient();
  if (!c) return Fail(c.error(), "open");
  if (Status s = MaybeRegister(**c); !s.ok()) return Fail(s, "register with the relay");
  auto contact = (*c)->AcceptInvite(code, message, g.timeout_ms);
  if (!contact) return Fail(contact.error(), "accept");
  auto sn = (*c)->GetSafetyNumber(*contact);
  auto pending = (*c)->PendingOutboxCount();
  const std::string digits = sn ? sn->digits : "";
  Print(json{{"contact", *contact}, {"safety_number", digits}, {"first_message_queued", pending && *pending > 0}},
        "Added contact '" + *contact + "' and sent: " + message + "\nSafety number (compare with " + *contact +
            "):\n    " + Grouped(digits));
  return 0;
}

int CmdContacts() {
  auto c = OpenClient();
  if (!c) return Fail(c.error(), "open");
  auto list = (*c)->Contacts();
  if (!list) return Fail(list.error(), "contacts");
  json arr = json::array();
  std::string human;
  for (const auto& ci : *list) {
    arr.push_back(json{{"name", ci.name}, {"trust", TrustName(ci.trust)}, {"fingerprint", ci.fingerprint},
                       {"reachable", ci.reachable}, {"direct", ci.direct}});
    human += ci.name + "  " + TrustName(ci.trust) + (ci.reachable ? "" : "  (waiting for their first message)") +
             (ci.direct ? "  (direct link)" : "") + "\n";
  }
  if (list->empty()) human = "No contacts yet: `invite` or `accept <code>`.";
  Print(json{{"contacts", arr}}, human);
  return 0;
}

int CmdVerify(const std::string& contact, bool confirm, bool accept_change, bool reject_change,
              bool reconsider_change) {
  if (int{accept_change} + int{reject_change} + int{reconsider_change} > 1) {
    return Fail(Status(StatusCode::kInvalidArgument,
                       "give one of --accept-change, --reject-change and --reconsider-change"),
                "verify");
  }
  auto c = OpenClient();
  if (!c) return Fail(c.error(), "open");
  if (reconsider_change) {
    if (auto r = (*c)->ReconsiderIdentityChange(contact); !r)
      return Fail(r.error(), "take back the rejection");
    if (!g.json) {
      std::cerr << "Took back the rejection of " << contact << "'s new key: it awaits your decision again. "
                << "Compare the number below with theirs, then `verify " << contact
                << " --accept-change` or `--reject-change`.\n";
    }
  }
  if (accept_change) {
    if (Status s = (*c)->AcceptIdentityChange(contact); !s.ok()) return Fail(s, "accept the identity change");
  }
  if (reject_change) {
    if (Status s = (*c)->RejectIdentityChange(contact); !s.ok()) return Fail(s, "reject the identity change");
    if (!g.json) {
      std::cerr << "Rejected: " << contact
                << "'s previous key stands, and messages from the rejected one are "
                << "dropped. If the change came through an invite you gave out, cancel it (`invites`).\n";
    }
  }
  auto sn = (*c)->GetSafetyNumber(contact);
  if (!sn) return Fail(sn.error(), "safety number");
  if (confirm) {
    if (Status s = (*c)->SetVerified(contact, true); !s.ok()) return Fail(s, "mark verified");
  }
  Print(json{{"contact", contact},
             {"safety_number", sn->digits},
             {"verified", confirm},
             {"scannable_hex", cw::ToHex(sn->scannable)}},
        "Safety number with " + contact + ":\n    " + Grouped(sn->digits) +
            (confirm ? "\nMarked verified."
             : reconsider_change
                 ? "\nIf it matches theirs, run: cipherward verify " + contact + " --accept-change"
                 : "\nIf it matches theirs, run: cipherward verify " + contact + " --confirm"));
  return 0;
}

int CmdSend(const std::string& contact, const std::string& text, const std::string& purpose, const std::string& file) {
  if (text.empty() == file.empty()) {
    return Fail(Status(StatusCode::kInvalidArgument, "give either a text or --file PATH"), "send");
  }
  auto c = OpenClient();
  if (!c) return Fail(c.error(), "open");
  auto seq = file.empty()
                 ? (*c)->SendText(contact, text, purpose)
                 : (*c)->SendFile(contact, file, purpose, cw::cli::ProgressBar("uploading", g.json), g.timeout_ms);
  if (!seq) return Fail(seq.error(), "send");
  auto sync = (*c)->Sync(g.timeout_ms);
  const bool sent = sync && sync->pending == 0;
  Print(json{{"contact", contact}, {"sequence", *seq}, {"status", sent ? "sent" : "queued"},
             {"error", sync ? "" : sync.error().message()}},
        sent ? "Sent to " + contact + "."
             : "Queued for " + contact + ": the relay is unreachable (" + (sync ? "" : sync.error().message()) +
                   "); it goes out with the next command that reaches the relay.");
  return 0;
}

int CmdReceive() {
  std::vector<cw::runtime::IncomingMessage> got;
  std::vector<cw::runtime::IncomingFile> files;
  std::mutex mu;
  cw::runtime::ClientOptions o;
  o.callbacks.on_message = [&](const cw::runtime::IncomingMessage& m) {
    std::lock_guard<std::mutex> lock(mu);
    got.push_back(cw::runtime::IncomingMessage{m.contact, m.sequence, m.sent_at_ms, m.received_at_ms, m.text.Clone(),
                                               m.group_id});
  };
  o.callbacks.on_file = [&](const cw::runtime::IncomingFile& f) {
    std::lock_guard<std::mutex> lock(mu);
    files.push_back(cw::runtime::IncomingFile{f.contact, f.sequence, f.sent_at_ms, f.received_at_ms, f.attachment.Clone()});
  };
  auto c = OpenClient(std::move(o));
  if (!c) return Fail(c.error(), "open");
  auto sync = (*c)->Sync(g.timeout_ms);
  if (!sync) return Fail(sync.error(), "receive");
  std::lock_guard<std::mutex> lock(mu);
  // Files are downloaded here, on this thread, after the messages naming them are stored: a download that
  // fails leaves the message in the history, from where it can be fetched again.
  json farr = json::array();
  std::string fhuman;
  for (const auto& f : files) {
    auto path = cw::cli::SaveIncomingFile(**c, g.home, f.attachment, cw::cli::ProgressBar(f.attachment.file_name, g.json),
                                          g.timeout_ms);
    json j{{"contact", f.contact}, {"sequence", f.sequence}, {"name", f.attachment.file_name}, {"size", f.attachment.size}};
    if (path) {
      j["path"] = *path;
      fhuman += "[" + TimeOf(f.sent_at_ms) + "] " + f.contact + " sent a file: " + *path + " (" +
                cw::cli::HumanSize(f.attachment.size) + ")\n";
    } else {
      j["error"] = path.error().message();
      j["code"] = std::string(cw::StatusCodeName(path.error().code()));
      fhuman += "[" + TimeOf(f.sent_at_ms) + "] " + f.contact + " sent a file (" + f.attachment.file_name +
                ") that could not be saved: " + path.error().message() + "\n";
    }
    farr.push_back(std::move(j));
  }
  json arr = json::array();
  std::string human;
  for (const auto& m : got) {
    arr.push_back(json{{"contact", m.contact}, {"group", m.group_id}, {"sequence", m.sequence}, {"sent_at_ms", m.sent_at_ms},
                       {"text", Text(m.text)}});
    const std::string in_group = m.group_id.empty() ? "" : " (group " + m.group_id + ")";
    human += "[" + TimeOf(m.sent_at_ms) + "] " + m.contact + in_group + ": " + Text(m.text) + "\n";
  }
  human += fhuman;
  if (got.empty() && files.empty()) human = "No new messages.";
  Print(json{{"messages", arr}, {"files", farr}, {"sent", sync->sent}, {"pending", sync->pending}}, human);
  return 0;
}

// Downloads (again) the file of message `sequence` with `contact`: for a download that failed at receive time.
int CmdFetch(const std::string& contact, uint64_t sequence) {
  auto c = OpenClient();
  if (!c) return Fail(c.error(), "open");
  auto h = (*c)->History(contact, 100000);
  if (!h) return Fail(h.error(), "fetch");
  auto row = std::find_if(h->begin(), h->end(), [&](const auto& m) { return m.sequence == sequence; });
  if (row == h->end()) return Fail(Status(StatusCode::kNotFound, "no such message"), "fetch");
  auto a = Client::AttachmentOf(*row);
  if (!a) return Fail(a.error(), "fetch");
  auto path = cw::cli::SaveIncomingFile(**c, g.home, *a, cw::cli::ProgressBar(a->file_name, g.json), g.timeout_ms);
  if (!path) return Fail(path.error(), "fetch");
  Print(json{{"contact", contact}, {"sequence", sequence}, {"name", a->file_name}, {"size", a->size}, {"path", *path}},
        "Saved " + *path + " (" + cw::cli::HumanSize(a->size) + ")");
  return 0;
}

int CmdHistory(const std::string& contact, size_t n, bool offline) {
  auto c = OpenClient();
  if (!c) return Fail(c.error(), "open");
  std::string note;
  if (!offline) {
    auto sync = (*c)->Sync(g.timeout_ms);
    if (!sync) note = "(relay unreachable: showing what is stored on this device)\n";
  }
  auto h = (*c)->History(contact, n);
  if (!h) return Fail(h.error(), "history");
  json arr = json::array();
  std::string human = note;
  for (const auto& m : *h) {
    arr.push_back(MessageJson(m));
    human += MessageLine(m) + "\n";
  }
  if (h->empty()) human += "No messages with " + contact + ".";
  Print(json{{"contact", contact}, {"messages", arr}}, human);
  return 0;
}

int CmdExportSigned(const std::string& out);

int CmdExport(const std::string& out, bool plain) {
  if (!plain) return CmdExportSigned(out);
  auto c = OpenClient();
  if (!c) return Fail(c.error(), "open");
  auto j = (*c)->ExportJson();
  if (!j) return Fail(j.error(), "export");
  if (out.empty() || out == "-") {
    std::cout.write(reinterpret_cast<const char*>(j->reveal().data()), static_cast<std::streamsize>(j->size()));
    std::cout << "\n";
    return 0;
  }
  const int fd = ::open(out.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0 || ::write(fd, j->reveal().data(), j->size()) != static_cast<ssize_t>(j->size())) {
    if (fd >= 0) ::close(fd);
    return Fail(Status(StatusCode::kUnavailable, "cannot write " + out), "export");
  }
  ::close(fd);
  Print(json{{"file", out}, {"bytes", j->size()}}, "Exported every conversation to " + out + " (plaintext: keep it safe).");
  return 0;
}

int CmdPeek() {
  auto c = OpenClient();
  if (!c) return Fail(c.error(), "open");
  auto p = (*c)->PeekRelay(g.timeout_ms);
  if (!p) return Fail(p.error(), "relay-peek");
  json arr = json::array();
  std::string human = std::to_string(p->size()) + " envelope(s) wait at the relay for this mailbox:\n";
  for (const auto& e : *p) {
    const size_t n = std::min<size_t>(e.envelope.size(), 48);
    const std::string prefix = cw::ToHex(cw::ByteView(e.envelope.data(), n));
    arr.push_back(json{{"seq", e.seq}, {"message_id", e.message_id}, {"size", e.envelope.size()}, {"prefix_hex", prefix}});
    human += "  seq " + std::to_string(e.seq) + "  " + std::to_string(e.envelope.size()) + " bytes  " + prefix + "...\n";
  }
  Print(json{{"envelopes", arr}}, human);
  return 0;
}

// ----- consent, audit, signed export, erasure (issue 6)

std::string_view StateName(cw::compliance::ConsentState s) { return cw::compliance::ConsentStateName(s); }

json ReceiptJson(const cw::runtime::ConsentRecord& r) {
  json purposes = json::object();
  for (const auto& [label, state] : r.purposes) purposes[label] = std::string(StateName(state));
  json j{{"receipt_id", r.receipt_id},       {"contact", r.contact},
         {"role", r.we_are_patient ? "patient" : "clinician"},
         {"countersigned", r.countersigned}, {"consent_timestamp_ms", r.consent_timestamp_ms},
         {"expires_at_ms", r.expires_at_ms}, {"purposes", purposes}};
  if (!r.kantara_json.empty()) j["kantara"] = json::parse(r.kantara_json, nullptr, false);
  return j;
}

int CmdConsentGrant(const std::string& contact, const std::vector<std::string>& purposes, int64_t expires_days,
                    const std::string& controller) {
  auto c = OpenClient();
  if (!c) return Fail(c.error(), "open");
  cw::runtime::ConsentGrant grant;
  grant.purposes = purposes;
  if (!controller.empty()) grant.controller_name = controller;
  if (expires_days > 0) grant.expires_at_ms = cw::SystemClock::Default().NowMillis() + expires_days * 86'400'000;
  auto id = (*c)->GrantConsent(contact, grant);
  if (!id) return Fail(id.error(), "consent grant");
  auto sync = (*c)->Sync(g.timeout_ms);
  Print(json{{"receipt_id", *id}, {"contact", contact}, {"purposes", purposes}, {"sent", sync && sync->pending == 0}},
        "Consent receipt " + *id + " signed and sent to " + contact +
            "; it is in force once their device countersigns it (see `consent show`).");
  return 0;
}

int CmdConsentShow() {
  auto c = OpenClient();
  if (!c) return Fail(c.error(), "open");
  auto sync = (*c)->Sync(g.timeout_ms);  // countersignatures and withdrawals waiting at the relay
  auto all = (*c)->ConsentReceipts();
  if (!all) return Fail(all.error(), "consent show");
  json arr = json::array();
  std::string human = sync ? "" : "(relay unreachable: showing what is stored on this device)\n";
  for (const auto& r : *all) {
    arr.push_back(ReceiptJson(r));
    human += r.receipt_id + "  " + (r.we_are_patient ? "given to " : "from ") + r.contact +
             (r.countersigned ? "" : "  (awaiting countersignature)") + "\n";
    for (const auto& [label, state] : r.purposes) human += "    " + label + ": " + std::string(StateName(state)) + "\n";
  }
  if (all->empty()) human += "No consent receipts.";
  Print(json{{"receipts", arr}}, human);
  return 0;
}

int CmdConsentWithdraw(const std::string& receipt_id, const std::vector<std::string>& purposes) {
  auto c = OpenClient();
  if (!c) return Fail(c.error(), "open");
  (void)(*c)->Sync(g.timeout_ms);
  if (Status s = (*c)->WithdrawConsent(receipt_id, purposes); !s.ok()) return Fail(s, "consent withdraw");
  auto sync = (*c)->Sync(g.timeout_ms);
  Print(json{{"receipt_id", receipt_id}, {"purposes", purposes}, {"sent", sync && sync->pending == 0}},
        "Withdrew " + (purposes.empty() ? std::string("every purpose") : std::to_string(purposes.size()) + " purpose(s)") +
            " of " + receipt_id + "; the withdrawal is signed and sent.");
  return 0;
}

int CmdPolicy(bool clinic, const std::vector<std::string>& require, const std::vector<std::string>& exempt,
              int64_t floor_days, bool set) {
  auto c = OpenClient();
  if (!c) return Fail(c.error(), "open");
  if (set) {
    cw::runtime::CompliancePolicy p;
    p.clinic = clinic;
    if (!require.empty()) p.requires_consent = require;
    if (!exempt.empty()) p.exempt = exempt;
    p.retention_floor_ms = floor_days * 86'400'000;
    if (Status s = (*c)->SetCompliancePolicy(p); !s.ok()) return Fail(s, "policy");
  }
  auto p = (*c)->GetCompliancePolicy();
  if (!p) return Fail(p.error(), "policy");
  std::string human = std::string(p->clinic ? "clinic device" : "patient device") + "\n  needs consent: ";
  for (const auto& l : p->requires_consent) human += l + " ";
  human += "\n  exempt: ";
  for (const auto& l : p->exempt) human += l + " ";
  human += "\n  retention floor: " + std::to_string(p->retention_floor_ms / 86'400'000) + " day(s)";
  Print(json{{"clinic", p->clinic},
             {"requires_consent", p->requires_consent},
             {"exempt", p->exempt},
             {"unlisted_requires_consent", p->unlisted_requires_consent},
             {"retention_floor_ms", p->retention_floor_ms}},
        human);
  return 0;
}

int CmdAuditVerify(bool list) {
  auto c = OpenClient();
  if (!c) return Fail(c.error(), "open");
  auto v = (*c)->VerifyAudit();
  if (!v) return Fail(v.error(), "audit verify");
  json entries = json::array();
  std::string human = "Audit chain " + v->chain_id + " verifies: " + std::to_string(v->chain.entries) + " entries, " +
                      std::to_string(v->checkpoints) + " signed checkpoints, anchored through " +
                      std::to_string(v->chain.anchored_through) + " (" + std::to_string(v->chain.unanchored_tail) +
                      " after the last checkpoint), " + std::to_string(v->peer_heads) + " peer chain head(s) held.\n";
  if (list) {
    auto trail = (*c)->AuditTrail();
    if (!trail) return Fail(trail.error(), "audit verify");
    for (const auto& e : *trail) {
      entries.push_back(json{{"sequence", e.sequence}, {"time_ms", e.time_ms},
                             {"type", std::string(cw::compliance::AuditEventTypeName(e.type))}, {"subject", e.subject},
                             {"ref", e.ref}, {"code", e.code}, {"digest", cw::ToHex(e.digest)}});
      human += "  " + std::to_string(e.sequence) + " " + TimeOf(e.time_ms) + " " +
               std::string(cw::compliance::AuditEventTypeName(e.type)) + " " + e.subject + " " + e.ref + "\n";
    }
  }
  json out{{"chain_id", v->chain_id},           {"entries", v->chain.entries},
           {"checkpoints", v->checkpoints},     {"anchored_through", v->chain.anchored_through},
           {"unanchored_tail", v->chain.unanchored_tail}, {"head", cw::ToHex(v->chain.head)},
           {"peer_heads", v->peer_heads}};
  if (list) out["trail"] = entries;
  Print(out, human);
  return 0;
}

int CmdAuditHead(const std::string& contact) {
  auto c = OpenClient();
  if (!c) return Fail(c.error(), "open");
  if (Status s = (*c)->SendAuditHead(contact); !s.ok()) return Fail(s, "audit head");
  auto sync = (*c)->Sync(g.timeout_ms);
  Print(json{{"contact", contact}, {"sent", sync && sync->pending == 0}},
        "Signed audit chain head sent to " + contact + ".");
  return 0;
}

int WriteFile0600(const std::string& path, cw::ByteView bytes) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0 || ::write(fd, bytes.data(), bytes.size()) != static_cast<ssize_t>(bytes.size())) {
    if (fd >= 0) ::close(fd);
    return -1;
  }
  return ::close(fd);
}

int CmdExportSigned(const std::string& out) {
  if (out.empty() || out == "-") {
    return Fail(Status(StatusCode::kInvalidArgument, "the signed bundle is binary: give --out FILE (or --plain for JSON)"),
                "export");
  }
  auto c = OpenClient();
  if (!c) return Fail(c.error(), "open");
  auto bundle = (*c)->ExportSigned();
  if (!bundle) return Fail(bundle.error(), "export");
  if (WriteFile0600(out, *bundle) != 0) return Fail(Status(StatusCode::kUnavailable, "cannot write " + out), "export");
  Print(json{{"file", out}, {"bytes", bundle->size()}, {"exporter_key", (*c)->Fingerprint()}},
        "Signed export written to " + out + " (it holds plaintext: keep it safe). Verify it anywhere with:\n  cipherward verify-export " +
            out + " --exporter-key " + (*c)->Fingerprint());
  return 0;
}

// Offline: opens no identity and needs no passphrase, only the bundle and public keys.
int CmdVerifyExport(const std::string& file, const std::string& exporter_hex, const std::vector<std::string>& party_hex) {
  std::ifstream in(file, std::ios::binary);
  if (!in) return Fail(Status(StatusCode::kNotFound, "cannot read " + file), "verify-export");
  const cw::Bytes bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  auto key_of = [](const std::string& hex) -> Result<cw::compliance::SigningPublicKey> {
    cw::Bytes k;
    if (!cw::FromHex(hex, &k) || k.size() != cw::compliance::kXEdDSAPublicKeySize) {
      return cw::Error(StatusCode::kInvalidArgument, "a key is the 66-hex-digit identity key (`cipherward init` prints it)");
    }
    return cw::compliance::SigningPublicKey{cw::compliance::SignatureScheme::kXEdDSA, k};
  };
  cw::compliance::ExportTrust trust;
  std::string trust_note;
  if (exporter_hex.empty()) {
    auto signer = cw::compliance::ExportSigner(bytes);
    if (!signer) return Fail(signer.error(), "verify-export");
    trust.exporter_key = *signer;
    trust_note = "signed by the key the bundle names; compare it with the exporter's identity before relying on it";
  } else {
    auto k = key_of(exporter_hex);
    if (!k) return Fail(k.error(), "verify-export");
    trust.exporter_key = *k;
    trust_note = "signed by the given exporter key";
  }
  for (const auto& h : party_hex) {
    auto k = key_of(h);
    if (!k) return Fail(k.error(), "verify-export");
    trust.party_keys.push_back(*k);
  }
  cw::compliance::StandardVerifier verifier;
  auto v = cw::compliance::VerifyExport(bytes, trust, verifier);
  if (!v) return Fail(v.error(), "verify-export");
  const auto& ct = v->contents;
  Print(json{{"valid", true},
             {"exporter", ct.exporter},
             {"exporter_key", cw::ToHex(trust.exporter_key.key)},
             {"exporter_key_given", !exporter_hex.empty()},
             {"created_at_ms", ct.created_at_ms},
             {"receipts", ct.receipts.size()},
             {"withdrawals", ct.withdrawals.size()},
             {"audit_entries", ct.audit_entries.size()},
             {"checkpoints", ct.checkpoints.size()},
             {"erasures", ct.erasures.size()},
             {"transcript_bytes", ct.transcript_json.size()}},
        "Export by " + ct.exporter + " verifies (" + trust_note + "): " + std::to_string(ct.receipts.size()) +
            " consent receipt(s), " + std::to_string(ct.withdrawals.size()) + " withdrawal(s), " +
            std::to_string(ct.audit_entries.size()) + " audit entries under " + std::to_string(ct.checkpoints.size()) +
            " signed checkpoint(s), " + std::to_string(ct.erasures.size()) + " erasure receipt(s).\nExporter key: " +
            cw::ToHex(trust.exporter_key.key));
  return 0;
}

int CmdErase(const std::string& contact) {
  auto c = OpenClient();
  if (!c) return Fail(c.error(), "open");
  auto id = (*c)->EraseConversation(contact);
  if (!id) return Fail(id.error(), "erase");
  auto sync = (*c)->Sync(g.timeout_ms);
  Print(json{{"contact", contact}, {"erasure_id", *id}, {"receipt_sent", sync && sync->pending == 0}},
        "Erased the conversation with " + contact + " (its key is destroyed); signed erasure receipt " + *id +
            " recorded and sent to " + contact + ".");
  return 0;
}

Result<cw::transport::StaticKeyPair> OperatorKey(const std::string& path) {
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) {
    auto pair = cw::transport::StaticKeyPair::Generate(cw::SystemRandom::Default());
    const std::string hex = cw::ToHex(pair.private_key().reveal()) + "\n";
    const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) return cw::Error(StatusCode::kUnavailable, "cannot create the key file");
    const bool ok = ::write(fd, hex.data(), hex.size()) == static_cast<ssize_t>(hex.size());
    ::close(fd);
    if (!ok) return cw::Error(StatusCode::kUnavailable, "cannot write the key file");
    return pair;
  }
  std::ifstream in(path);
  std::string hex;
  std::getline(in, hex);
  cw::Bytes raw;
  if (!cw::FromHex(hex, &raw)) return cw::Error(StatusCode::kMalformed, "the key file does not hold a hex key");
  SecretBytes secret(raw);
  sodium_memzero(raw.data(), raw.size());
  return cw::transport::StaticKeyPair::FromPrivateKey(secret.reveal());
}

int CmdOperatorKey(const std::string& path) {
  auto k = OperatorKey(path);
  if (!k) return Fail(k.error(), "operator-key");
  const std::string pub = cw::transport::KeyToHex(k->public_key());
  Print(json{{"public_key", pub}}, pub);
  return 0;
}

int CmdStats(const std::string& path) {
  auto k = OperatorKey(path);
  if (!k) return Fail(k.error(), "operator-key");
  if (g.relay.empty()) return Fail(Status(StatusCode::kInvalidArgument, "pass --relay"), "relay-stats");
  auto s = cw::runtime::FetchRelayStats(g.relay, std::move(*k), g.timeout_ms);
  if (!s) return Fail(s.error(), "relay-stats");
  Print(json{{"connections", s->connections}, {"mailboxes", s->mailboxes}, {"queued_messages", s->queued_messages},
             {"queued_bytes", s->queued_bytes}, {"attachments", s->attachments}, {"syncs", s->syncs},
             {"commands", s->commands}, {"errors", s->errors}},
        "relay: " + std::to_string(s->mailboxes) + " mailboxes, " + std::to_string(s->queued_messages) +
            " queued messages (" + std::to_string(s->queued_bytes) + " bytes of sealed envelopes), " +
            std::to_string(s->connections) + " connections, " + std::to_string(s->commands) + " commands served");
  return 0;
}

// ----- chat

struct ChatState {
  std::mutex mu;
  std::deque<std::string> lines;  // to print above the prompt
  int wake[2] = {-1, -1};
  bool quit = false;
  Client* client = nullptr;
  std::string contact;
  std::deque<cw::runtime::IncomingFile> downloads;  // received in the background, saved on the main thread
  std::string home;
};
ChatState* chat = nullptr;

void Announce(const std::string& line) {
  {
    std::lock_guard<std::mutex> lock(chat->mu);
    chat->lines.push_back(line);
  }
  const char b = 1;
  (void)!::write(chat->wake[1], &b, 1);
}

// Prints queued lines above the prompt, keeping what the user is typing.
void FlushAnnouncements() {
  std::deque<std::string> lines;
  {
    std::lock_guard<std::mutex> lock(chat->mu);
    lines.swap(chat->lines);
  }
  if (lines.empty()) return;
  char* saved = rl_copy_text(0, rl_end);
  const int point = rl_point;
  rl_save_prompt();
  rl_replace_line("", 0);
  rl_redisplay();
  for (const auto& l : lines) std::printf("\r%s\n", l.c_str());
  std::fflush(stdout);
  rl_restore_prompt();
  rl_replace_line(saved, 0);
  rl_point = point;
  rl_redisplay();
  std::free(saved);
}

// Saves files announced by on_file into the downloads folder, with the prompt cleared meanwhile (the
// download blocks, and must not run on the client's loop thread where on_file runs).
void SaveDownloads() {
  for (;;) {
    cw::runtime::IncomingFile f;
    {
      std::lock_guard<std::mutex> lock(chat->mu);
      if (chat->downloads.empty()) return;
      f = std::move(chat->downloads.front());
      chat->downloads.pop_front();
    }
    rl_save_prompt();
    rl_replace_line("", 0);
    rl_redisplay();
    std::printf("\r");
    std::fflush(stdout);
    auto path = cw::cli::SaveIncomingFile(*chat->client, chat->home, f.attachment,
                                          cw::cli::ProgressBar("downloading", false), g.timeout_ms);
    if (path) std::printf("  saved %s\n", path->c_str());
    else std::printf("! could not save %s: %s\n", f.attachment.file_name.c_str(), path.error().message().c_str());
    std::fflush(stdout);
    rl_restore_prompt();
    rl_redisplay();
  }
}

void OnLine(char* raw) {
  if (raw == nullptr) {  // EOF
    chat->quit = true;
    return;
  }
  std::string line(raw);
  std::free(raw);
  if (line.empty()) return;
  add_history(line.c_str());
  Client& c = *chat->client;
  if (line == "/quit" || line == "/exit") {
    chat->quit = true;
  } else if (line.rfind("/verify", 0) == 0) {
    const bool confirm = line.find("confirm") != std::string::npos;
    auto sn = c.GetSafetyNumber(chat->contact);
    if (!sn) {
      std::printf("! %s%s\n", sn.error().message().c_str(), Hint(sn.error()).c_str());
    } else {
      std::printf("Safety number with %s:\n    %s\n", chat->contact.c_str(), Grouped(sn->digits).c_str());
      if (confirm && c.SetVerified(chat->contact, true).ok()) std::printf("Marked verified.\n");
      if (!confirm) std::printf("If it matches theirs: /verify confirm\n");
    }
  } else if (line.rfind("/file", 0) == 0) {
    const size_t at = line.find_first_not_of(' ', 5);
    if (at == std::string::npos || line.size() < 6 || line[5] != ' ') {
      std::printf("! usage: /file <path>\n");
    } else {
      auto seq = c.SendFile(chat->contact, line.substr(at), cw::cli::ProgressBar("uploading", false), g.timeout_ms);
      if (!seq) std::printf("! file not sent: %s%s\n", seq.error().message().c_str(), Hint(seq.error()).c_str());
      else std::printf("  sent a file: %s\n", line.substr(at).c_str());
    }
  } else if (line == "/accept") {
    Status s = c.AcceptIdentityChange(chat->contact);
    std::printf("%s\n", s.ok() ? "Accepted the new identity key." : ("! " + s.message()).c_str());
  } else if (line == "/reject") {
    Status s = c.RejectIdentityChange(chat->contact);
    std::printf("%s\n", s.ok() ? "Rejected the new identity key: the previous one stands."
                               : ("! " + s.message()).c_str());
  } else if (line == "/reconsider") {
    auto sn = c.ReconsiderIdentityChange(chat->contact);
    if (!sn) {
      std::printf("! %s\n", sn.error().message().c_str());
    } else {
      std::printf(
          "Took back the rejection: the new key awaits your decision. Its safety number:\n    %s\n"
          "/accept if it matches theirs, /reject if not.\n",
          Grouped(sn->digits).c_str());
    }
  } else if (line == "/help") {
    std::printf(
        "/file <path>  /verify  /verify confirm  /accept or /reject (a changed identity)  /reconsider (take "
        "back "
        "a /reject)  /quit\n");
  } else if (line[0] == '/') {
    std::printf("! unknown command; /help\n");
  } else {
    auto seq = c.SendText(chat->contact, line);
    if (!seq) std::printf("! not sent: %s%s\n", seq.error().message().c_str(), Hint(seq.error()).c_str());
    else if (!c.connected()) std::printf("  (queued: the relay is unreachable; it goes out when it returns)\n");
  }
  std::fflush(stdout);
}

int CmdChat(const std::string& contact) {
  ChatState state;
  chat = &state;
  state.contact = contact;
  if (::pipe(state.wake) != 0) return Fail(Status(StatusCode::kInternal, "pipe"), "chat");
  cw::runtime::ClientOptions o;
  o.callbacks.on_message = [&](const cw::runtime::IncomingMessage& m) {
    const std::string in_group = m.group_id.empty() ? "" : " (group " + m.group_id + ")";
    Announce("[" + TimeOf(m.received_at_ms) + "] " + m.contact + in_group + ": " + Text(m.text));
  };
  o.callbacks.on_file = [&](const cw::runtime::IncomingFile& f) {
    {
      std::lock_guard<std::mutex> lock(state.mu);
      state.downloads.push_back(
          cw::runtime::IncomingFile{f.contact, f.sequence, f.sent_at_ms, f.received_at_ms, f.attachment.Clone()});
    }
    Announce("[" + TimeOf(f.received_at_ms) + "] " + f.contact + " sent a file: " + f.attachment.file_name + " (" +
             cw::cli::HumanSize(f.attachment.size) + ")");
  };
  o.callbacks.on_identity_change = [](const cw::runtime::IdentityChangeEvent& e) {
    Announce("!! " + e.contact +
             "'s identity key CHANGED. Sending is blocked. Compare safety numbers (/verify) "
             "and type /accept if they match, /reject if they do not.");
  };
  o.callbacks.on_connection = [](bool up) { Announce(up ? "-- connected to the relay" : "-- relay unreachable, retrying"); };
  auto c = OpenClient(std::move(o));
  if (!c) return Fail(c.error(), "open");
  state.client = c->get();
  state.home = g.home;
  auto h = (*c)->History(contact, 10);
  if (h) {
    for (const auto& m : *h) std::printf("%s\n", MessageLine(m).c_str());
  }
  if (Status s = (*c)->StartBackground(); !s.ok()) return Fail(s, "chat");
  if (!g.direct.empty()) std::printf("-- direct links: listening on %s\n", (*c)->DirectEndpoint().c_str());
  std::printf("-- chatting with %s; /file <path>, /verify, /quit\n", contact.c_str());
  const std::string prompt = "> ";
  rl_callback_handler_install(prompt.c_str(), OnLine);
  while (!state.quit) {
    fd_set fds;
    FD_ZERO(&fds);
    FD_SET(STDIN_FILENO, &fds);
    FD_SET(state.wake[0], &fds);
    if (::select(std::max(STDIN_FILENO, state.wake[0]) + 1, &fds, nullptr, nullptr, nullptr) < 0) {
      if (errno == EINTR) continue;
      break;
    }
    if (FD_ISSET(state.wake[0], &fds)) {
      char buf[64];
      (void)!::read(state.wake[0], buf, sizeof buf);
      FlushAnnouncements();
      SaveDownloads();
    }
    if (FD_ISSET(STDIN_FILENO, &fds)) rl_callback_read_char();
  }
  rl_callback_handler_remove();
  std::printf("\n");
  c->reset();  // stops the loop thread before the pipe closes
  ::close(state.wake[0]);
  ::close(state.wake[1]);
  chat = nullptr;
  return 0;
}

std::string DefaultHome() {
  if (const char* h = std::getenv("CIPHERWARD_HOME"); h && *h) return h;
  if (const char* h = std::getenv("HOME"); h && *h) return std::string(h) + "/.cipherward";
  return ".cipherward";
}

}  // namespace

int main(int argc, char** argv) {
  if (sodium_init() < 0) return 1;
  CLI::App app{"cipherward: end-to-end encrypted chat for patients and care teams"};
  app.require_subcommand(1);
  g.home = DefaultHome();
  app.add_option("--home", g.home, "data directory of this identity [$CIPHERWARD_HOME or ~/.cipherward]");
  app.add_flag("--json", g.json, "print one JSON object");
  app.add_option("--passphrase-file", g.passphrase_file, "read the passphrase from this file (else CW_PASSPHRASE, else the terminal)");
  app.add_option("--relay", g.relay, "relay address cw://<key>@host:port (to register)");
  app.add_option("--timeout-ms", g.timeout_ms, "how long to wait for the relay")->capture_default_str();
  app.add_option("--direct", g.direct,
                 "listen for contacts' direct P2P links on host:port (a fixed port: it is announced to every "
                 "contact, revealing this address to them); off by default");

  std::string name, kdf = "moderate", code, message = "Hello, I accepted your invitation.", contact, text, out, key_file,
      file;
  size_t n = 50;
  bool confirm = false, accept_change = false, reject_change = false, reconsider_change = false,
       offline = false, plain = false, clinic = false, list = false;
  std::string purpose(cw::runtime::kDefaultPurpose), receipt_id, exporter_key;
  std::vector<std::string> purposes, require, exempt, party_keys;
  int64_t expires_days = 0, floor_days = 0;

  auto* init = app.add_subcommand("init", "create a new identity (and register with --relay)");
  init->add_option("--name", name, "your name as contacts see it")->required();
  init->add_option("--kdf", kdf, "passphrase hardening: moderate (0.5 s, 256 MiB) or interactive")->capture_default_str();
  int64_t valid_hours = cw::runtime::kDefaultInviteValidForMs / 3600 / 1000;
  std::string cancel;
  auto* invite = app.add_subcommand("invite", "make an invite code for one person");
  invite->add_option("--valid-hours", valid_hours, "hours the code admits someone (0: never expires)")->capture_default_str();
  std::string invite_for;
  invite->add_option(
      "--for", invite_for,
      "a code for this contact's new device (a lost phone, a reinstall), which admits that name "
      "only; plain codes admit new contacts only");
  auto* invites = app.add_subcommand("invites", "list your invites nobody has answered yet (--cancel ID revokes one)");
  invites->add_option("--cancel", cancel, "revoke this open invite at the relay");
  auto* revoke = app.add_subcommand("revoke", "stop a contact from writing to you (the relay refuses their messages)");
  revoke->add_option("contact", contact)->required();
  auto* remove = app.add_subcommand("remove", "revoke a contact and forget it (the conversation stays until erase)");
  remove->add_option("contact", contact)->required();
  auto* accept = app.add_subcommand("accept", "accept an invite code: adds the contact and says hello");
  accept->add_option("code", code)->required();
  accept->add_option("--message", message, "the first message")->capture_default_str();
  auto* contacts = app.add_subcommand("contacts", "list contacts and their trust");
  auto* verify = app.add_subcommand("verify", "show the safety number with a contact");
  verify->add_option("contact", contact)->required();
  verify->add_flag("--confirm", confirm, "mark the contact verified (after comparing)");
  verify->add_flag("--accept-change", accept_change,
                   "accept the contact's changed identity key (it matches theirs)");
  verify->add_flag(
      "--reject-change", reject_change,
      "reject the contact's changed identity key (it does not match theirs: someone else wrote)");
  verify->add_flag("--reconsider-change", reconsider_change,
                   "take back the last --reject-change (it was their new device after all): the key awaits "
                   "a decision again");
  auto* send = app.add_subcommand("send", "send a message");
  send->add_option("contact", contact)->required();
  send->add_option("text", text, "the message (or --file)");
  send->add_option("--purpose", purpose, "purpose label: treatment, scheduling, billing, marketing or x-<clinic's own>")
      ->capture_default_str();
  send->add_option("--file", file, "send this file instead of a text");
  auto* receive = app.add_subcommand("receive", "fetch and print new messages");
  auto* history = app.add_subcommand("history", "the conversation with a contact (fetches new messages first)");
  history->add_option("contact", contact)->required();
  history->add_option("-n", n, "how many messages")->capture_default_str();
  history->add_flag("--offline", offline, "do not contact the relay");
  uint64_t sequence = 0;
  auto* fetch = app.add_subcommand("fetch", "download the file of a message again (sequence from `history --json`)");
  fetch->add_option("contact", contact)->required();
  fetch->add_option("sequence", sequence)->required();
  auto* exp = app.add_subcommand("export", "one signed bundle: transcripts, consent receipts, audit chain (--plain: JSON only)");
  exp->add_option("--out", out, "file to write (mode 0600); the signed bundle needs it, --plain prints to stdout without it");
  exp->add_flag("--plain", plain, "every conversation as plaintext JSON, unsigned (the earlier export)");
  auto* verify_export = app.add_subcommand("verify-export", "check a signed export offline (no identity or passphrase needed)");
  verify_export->add_option("file", out)->required();
  verify_export->add_option("--exporter-key", exporter_key, "the exporter's identity key (hex); else the bundle's own, shown to compare");
  verify_export->add_option("--party-key", party_keys, "identity keys receipts may be signed with (repeatable)");
  auto* consent = app.add_subcommand("consent", "consent receipts: grant, show, withdraw");
  consent->require_subcommand(1);
  auto* grant = consent->add_subcommand("grant", "as the patient, consent to purposes for a clinician contact");
  grant->add_option("contact", contact)->required();
  grant->add_option("--purpose", purposes, "a purpose label (repeatable)")->required();
  grant->add_option("--expires-days", expires_days, "the consent lapses after this many days (0: until withdrawn)");
  grant->add_option("--controller", name, "the clinic's name as you know it");
  auto* consent_show = consent->add_subcommand("show", "every consent receipt on this device and its state");
  auto* withdraw = consent->add_subcommand("withdraw", "as the patient, withdraw a receipt (or some of its purposes)");
  withdraw->add_option("receipt", receipt_id)->required();
  withdraw->add_option("--purpose", purposes, "withdraw only this purpose (repeatable); all when absent");
  auto* policy = app.add_subcommand("policy", "show or set this device's consent policy and retention floor");
  auto* policy_clinic = policy->add_flag("--clinic", clinic, "this is a clinician's device: gate outgoing messages");
  auto* policy_require = policy->add_option("--require", require, "a purpose that needs consent (repeatable)");
  auto* policy_exempt = policy->add_option("--exempt", exempt, "a purpose that needs none (repeatable)");
  auto* policy_floor = policy->add_option("--retention-floor-days", floor_days, "keep records at least this long");
  auto* audit = app.add_subcommand("audit", "the device's tamper-evident audit trail");
  audit->require_subcommand(1);
  auto* audit_verify = audit->add_subcommand("verify", "verify the chain against its signed checkpoints");
  audit_verify->add_flag("--list", list, "also print every entry (ids only, never content)");
  auto* audit_head = audit->add_subcommand("head", "send a signed chain head to a contact");
  audit_head->add_option("contact", contact)->required();
  auto* erase = app.add_subcommand("erase", "erase the conversation with a contact (crypto-shred) and send a signed receipt");
  erase->add_option("contact", contact)->required();
  auto* chat_cmd = app.add_subcommand("chat", "talk interactively");
  chat_cmd->add_option("contact", contact)->required();
  auto* peek = app.add_subcommand("relay-peek", "show the sealed envelopes waiting at the relay, without reading them");
  auto* opkey = app.add_subcommand("operator-key", "create or show an operator key for relay stats");
  opkey->add_option("--key-file", key_file)->required();
  auto* stats = app.add_subcommand("relay-stats", "ask the relay for its statistics (needs --stats-key on the relay)");
  stats->add_option("--key-file", key_file)->required();
  cw::cli::GroupCommands groups(app);

  CLI11_PARSE(app, argc, argv);

  if (*init) return CmdInit(name, kdf);
  if (*invite) return CmdInvite(valid_hours, invite_for);
  if (*invites) return CmdInvites(cancel);
  if (*revoke) return CmdRevoke(contact, /*remove=*/false);
  if (*remove) return CmdRevoke(contact, /*remove=*/true);
  if (*accept) return CmdAccept(code, message);
  if (*contacts) return CmdContacts();
  if (*verify) return CmdVerify(contact, confirm, accept_change, reject_change, reconsider_change);
  if (*send) return CmdSend(contact, text, purpose, file);
  if (*receive) return CmdReceive();
  if (*history) return CmdHistory(contact, n, offline);
  if (*fetch) return CmdFetch(contact, sequence);
  if (*exp) return CmdExport(out, plain);
  if (*verify_export) return CmdVerifyExport(out, exporter_key, party_keys);
  if (*grant) return CmdConsentGrant(contact, purposes, expires_days, name);
  if (*consent_show) return CmdConsentShow();
  if (*withdraw) return CmdConsentWithdraw(receipt_id, purposes);
  if (*policy) {
    const bool set = *policy_clinic || *policy_require || *policy_exempt || *policy_floor;
    return CmdPolicy(clinic, require, exempt, floor_days, set);
  }
  if (*audit_verify) return CmdAuditVerify(list);
  if (*audit_head) return CmdAuditHead(contact);
  if (*erase) return CmdErase(contact);
  if (*chat_cmd) return CmdChat(contact);
  if (*peek) return CmdPeek();
  if (*opkey) return CmdOperatorKey(key_file);
  if (*stats) return CmdStats(key_file);
  if (groups.parsed()) {
    return groups.Run(cw::cli::CliIo{[] { return OpenClient(); }, Fail, Print, MessageJson, MessageLine, g.timeout_ms});
  }
  return 1;
}
