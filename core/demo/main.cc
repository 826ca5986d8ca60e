// cipherward-demo: the whole session engine in one process. A clinician and a patient exchange pre-key
// bundles, open a session, talk both ways, compare safety numbers, and a care team of three shares a group
// message. Every byte that would cross a network is shown as the ciphertext it is.
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "core/session/engine.h"
#include "core/wire/bundle.h"

namespace {

using cw::session::Address;
using cw::session::Engine;

void Die(const char* what, const cw::Status& s) {
  std::fprintf(stderr, "demo: %s failed: %s\n", what, s.ToString().c_str());
  std::exit(1);
}

template <typename T>
T Must(cw::Result<T> r, const char* what) {
  if (!r) Die(what, r.error());
  return std::move(*r);
}

void Must(cw::Status s, const char* what) {
  if (!s.ok()) Die(what, s);
}

std::string Text(const cw::SecretBytes& b) {
  return std::string(reinterpret_cast<const char*>(b.reveal().data()), b.size());
}

std::string Preview(const cw::Bytes& b) {
  std::string hex = cw::ToHex(cw::ByteView(b.data(), std::min<size_t>(b.size(), 16)));
  return hex + "... (" + std::to_string(b.size()) + " bytes)";
}

const char* TypeName(cw::session::MessageType t) {
  switch (t) {
    case cw::session::MessageType::kPreKey: return "PreKeySignalMessage";
    case cw::session::MessageType::kSignal: return "SignalMessage";
    case cw::session::MessageType::kSenderKey: return "SenderKeyMessage";
    default: return "other";
  }
}

struct Party {
  std::string name;
  cw::session::InMemoryStore store;
  std::unique_ptr<Engine> engine;
};

void Send(Party& from, Party& to, const std::string& text) {
  auto c = Must(from.engine->Encrypt(Address{to.name, 1}, cw::AsBytes(text)), "encrypt");
  std::printf("  %-10s -> %-10s %-20s %s\n", from.name.c_str(), to.name.c_str(), TypeName(c.type),
              Preview(c.body).c_str());
  auto r = Must(to.engine->Decrypt(Address{from.name, 1}, c), "decrypt");
  std::printf("  %-10s reads: \"%s\"\n", to.name.c_str(), Text(r.body).c_str());
}

// Delivers group set-up messages and, in turn, the replies they cause (each member's own sender key).
void Deliver(std::vector<Party*> parties, const std::string& from, std::vector<cw::session::Outgoing> out) {
  std::vector<std::pair<std::string, cw::session::Outgoing>> queue;
  for (auto& o : out) queue.emplace_back(from, std::move(o));
  while (!queue.empty()) {
    auto [sender, o] = std::move(queue.front());
    queue.erase(queue.begin());
    for (Party* p : parties) {
      if (p->name != o.to.name) continue;
      auto r = Must(p->engine->Decrypt(Address{sender, 1}, o.message), "group setup");
      for (auto& reply : r.replies) queue.emplace_back(p->name, std::move(reply));
    }
  }
}

}  // namespace

int main() {
  Party clinician{"dr.okafor", {}, nullptr};
  Party patient{"patient.lee", {}, nullptr};
  Party nurse{"nurse.ruiz", {}, nullptr};
  for (Party* p : {&clinician, &patient, &nurse}) {
    p->engine = Must(Engine::Open(&p->store, p->name), "open identity");
  }

  std::printf("Cipherward in-process demo: Signal v3 sessions on libsignal-protocol-c\n\n");
  std::printf("1. The patient publishes a pre-key bundle; the clinician runs X3DH with it.\n");
  auto bundle = Must(patient.engine->MakeBundle(), "bundle");
  cw::Bytes encoded = cw::wire::EncodeBundle(bundle);
  std::printf("  bundle (msgpack v1): %s, one-time pre-key #%u\n", Preview(encoded).c_str(),
              bundle.one_time_pre_key ? bundle.one_time_pre_key->id : 0);
  auto decoded = Must(cw::wire::DecodeBundle(encoded), "decode bundle");
  Must(clinician.engine->ProcessBundle(Address{patient.name, 1}, decoded), "X3DH");

  std::printf("\n2. Messages both ways (the first is a PreKeySignalMessage, then the ratchet turns):\n");
  Send(clinician, patient, "Hello, this is Dr. Okafor. How is the new inhaler working?");
  Send(patient, clinician, "Much better, thank you. Fewer night-time symptoms.");
  Send(clinician, patient, "Good. Keep the same dose and book a review in 4 weeks.");
  Send(patient, clinician, "Will do.");

  std::printf("\n3. Safety numbers (read aloud or scan to verify there is no one in the middle):\n");
  auto sn_c = Must(clinician.engine->GetSafetyNumber(patient.name), "safety number");
  auto sn_p = Must(patient.engine->GetSafetyNumber(clinician.name), "safety number");
  auto group_digits = [](const std::string& d) {
    std::string out;
    for (size_t i = 0; i < d.size(); i += 5) out += d.substr(i, 5) + (i == 25 ? "\n    " : " ");
    return out;
  };
  std::printf("  clinician sees:\n    %s\n", group_digits(sn_c.digits).c_str());
  std::printf("  patient sees:\n    %s\n", group_digits(sn_p.digits).c_str());
  bool match = Must(clinician.engine->CompareScannedSafetyNumber(patient.name, sn_p.scannable), "compare");
  std::printf("  scanned QR payload matches: %s\n", match ? "yes" : "NO");
  if (match) Must(clinician.engine->SetVerified(patient.name, true), "verify");

  std::printf("\n4. A care team: the clinician, the nurse and the patient share sender keys.\n");
  for (auto [a, b] : {std::pair{&clinician, &nurse}, std::pair{&nurse, &patient}}) {
    Must(a->engine->ProcessBundle(Address{b->name, 1}, Must(b->engine->MakeBundle(), "bundle")), "X3DH");
    Send(*a, *b, "Hi, setting up our care-team chat.");
  }
  std::vector<Party*> team = {&clinician, &nurse, &patient};
  const std::string group = clinician.engine->NewGroupId();
  Deliver(team, clinician.name,
          Must(clinician.engine->CreateGroup(group, {nurse.name, patient.name}), "create group").messages);
  auto g = Must(clinician.engine->GroupEncrypt(group, cw::AsBytes("Team: inhaler review booked for 4 weeks.")),
                "group encrypt");
  std::printf("  %-10s -> group      %-20s %s\n", clinician.name.c_str(), TypeName(g.type), Preview(g.body).c_str());
  for (Party* p : {&nurse, &patient}) {
    auto r = Must(p->engine->Decrypt(Address{clinician.name, 1}, g), "group decrypt");
    std::printf("  %-10s reads: \"%s\"\n", p->name.c_str(), Text(r.body).c_str());
  }

  std::printf("\n5. A replayed message is refused:\n");
  auto c = Must(clinician.engine->Encrypt(Address{patient.name, 1}, cw::AsBytes("Once only.")), "encrypt");
  Must(patient.engine->Decrypt(Address{clinician.name, 1}, c), "decrypt");
  auto again = patient.engine->Decrypt(Address{clinician.name, 1}, c);
  std::printf("  second delivery: %s\n", again ? "accepted (BUG)" : again.error().ToString().c_str());

  std::printf("\nDone. Next: the relay and the CLI turn this into a conversation between devices.\n");
  return again ? 1 : 0;
}
