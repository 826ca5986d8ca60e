// cw_fuzz_corpus_gen: writes the fuzz targets' seed corpora.
//
//   cw_fuzz_corpus_gen FUZZ_DIR      (normally: build/rel/fuzz/cw_fuzz_corpus_gen fuzz)
//
// For each target it replaces the files named gen-* in FUZZ_DIR/<target>/corpus/ with freshly generated
// ones, named gen-<first 8 bytes of BLAKE2b of the content, hex>; any other file there (inputs kept from
// fuzzing runs) is left alone. Everything comes from fixed seeds (SessionFixture, SeededRandom), so two
// runs write identical files; a difference means something in the engine draws randomness or time around
// the seams.
//
// The session_decrypt seeds are real messages from alice to bob that decrypt against exactly the state
// SessionFixture::Build() gives, which is what the fuzz target attacks.
#include <signal/curve.h>
#include <signal/protocol.h>
#include <signal/signal_protocol.h>
#include <sodium.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "core/base/bytes.h"
#include "core/base/random.h"
#include "core/base/secret.h"
#include "core/session/engine.h"
#include "core/wire/attachment.h"
#include "core/wire/app_message.h"
#include "core/wire/receipt.h"
#include "core/wire/direct.h"
#include "core/wire/bundle.h"
#include "core/wire/content.h"
#include "core/wire/padding.h"
#include "fuzz/session_fixture.h"

namespace {

namespace fs = std::filesystem;
using cw::Bytes;
using cw::session::MessageType;

[[noreturn]] void Die(const std::string& what) {
  std::fprintf(stderr, "cw_fuzz_corpus_gen: %s\n", what.c_str());
  std::exit(1);
}

template <typename T>
T Take(const char* step, cw::Result<T> result) {
  if (!result) Die(std::string(step) + ": " + result.error().ToString());
  return std::move(*result);
}

void Check(const char* step, const cw::Status& status) {
  if (!status.ok()) Die(std::string(step) + ": " + status.ToString());
}

Bytes FromSpan(std::span<const uint8_t> s) { return Bytes(s.begin(), s.end()); }

Bytes Typed(MessageType type, const Bytes& body) {
  Bytes out(body.size() + 1);
  out[0] = static_cast<uint8_t>(type);
  std::copy(body.begin(), body.end(), out.begin() + 1);
  return out;
}

// Inputs per target, written at the end.
std::map<std::string, std::vector<Bytes>> g_corpus;

void Add(const std::string& target, Bytes input) { g_corpus[target].push_back(std::move(input)); }

// A SenderKeyDistributionMessage built through libsignal itself: the engine only ever sends one inside an
// encrypted 1:1 content, so there is no other way to get its plain serialization.
Bytes MakeSenderKeyDistributionMessage(cw::Random& random) {
  signal_context* context = nullptr;
  if (signal_context_create(&context, nullptr) != 0) Die("signal_context_create");
  uint8_t public_key[33];
  public_key[0] = 0x05;  // DJB_TYPE
  random.Fill(public_key + 1, 32);
  uint8_t chain_key[32];
  random.Fill(chain_key, sizeof chain_key);
  ec_public_key* signature_key = nullptr;
  if (curve_decode_point(&signature_key, public_key, sizeof public_key, context) != 0)
    Die("curve_decode_point");
  sender_key_distribution_message* message = nullptr;
  if (sender_key_distribution_message_create(&message, /*id=*/random.Uniform(1u << 31), /*iteration=*/3,
                                             chain_key, sizeof chain_key, signature_key, context) != 0) {
    Die("sender_key_distribution_message_create");
  }
  signal_buffer* serialized =
      ciphertext_message_get_serialized(reinterpret_cast<ciphertext_message*>(message));
  Bytes out(signal_buffer_data(serialized), signal_buffer_data(serialized) + signal_buffer_len(serialized));
  SIGNAL_UNREF(message);
  SIGNAL_UNREF(signature_key);
  signal_context_destroy(context);
  return out;
}

void Generate() {
  auto f = cw::fuzz::SessionFixture::Build();
  cw::SeededRandom random(cw::fuzz::kFixtureSeed ^ 0xc0ffee);
  const auto alice = f->alice_address();
  const auto bob = f->bob_address();

  // --- session_decrypt and signal_message_parse: real messages from alice to bob's fixture state ---
  // The message that began the session (a duplicate for bob now).
  Add("session_decrypt", Typed(MessageType::kPreKey, f->first_message.body));
  Add("signal_message_parse", Typed(MessageType::kPreKey, f->first_message.body));

  // New SignalMessages: the next one, and one after a skipped one.
  for (int i = 0; i < 3; ++i) {
    std::string text = "message " + std::to_string(i);
    auto m = Take("alice encrypts", f->alice->Encrypt(bob, cw::AsBytes(text)));
    if (m.type != MessageType::kSignal) Die("expected a SignalMessage");
    if (i == 1) continue;  // skipped: message 2 exercises bob's skipped-key path
    Add("session_decrypt", Typed(MessageType::kSignal, m.body));
    if (i == 0) Add("signal_message_parse", Typed(MessageType::kSignal, m.body));
  }
  // A long message, so the fuzzer starts with more than one AES block.
  {
    std::vector<uint8_t> text(700);
    random.Fill(text.data(), text.size());
    auto m = Take("alice encrypts", f->alice->Encrypt(bob, text));
    Add("session_decrypt", Typed(MessageType::kSignal, m.body));
  }

  // Group messages: the next one, and one after a skipped one.
  for (int i = 0; i < 3; ++i) {
    std::string text = "group message " + std::to_string(i);
    auto m = Take("alice group-encrypts", f->alice->GroupEncrypt(f->group_id, cw::AsBytes(text)));
    if (m.type != MessageType::kSenderKey) Die("expected a SenderKeyMessage");
    if (i == 1) continue;
    Add("session_decrypt", Typed(MessageType::kSenderKey, m.body));
    if (i == 0) Add("signal_message_parse", Typed(MessageType::kSenderKey, m.body));
  }

  const Bytes skdm = MakeSenderKeyDistributionMessage(random);
  Add("signal_message_parse", Typed(MessageType::kSenderKeyDistribution, skdm));

  // Bundles from bob (with and without a one-time pre-key). Handing them out changes only which one-time
  // pre-keys bob has marked as given, not the keys themselves, so messages built from them still decrypt
  // against the fixture state.
  const cw::wire::PreKeyBundle bundle = Take("bob bundle", f->bob->MakeBundle(true));
  const cw::wire::PreKeyBundle bundle_no_otpk = Take("bob bundle", f->bob->MakeBundle(false));
  Add("bundle_decode", cw::wire::EncodeBundle(bundle));
  Add("bundle_decode", cw::wire::EncodeBundle(bundle_no_otpk));

  // An impostor claiming to be alice with another identity key: bob must refuse (untrusted identity).
  {
    cw::session::InMemoryStore store;
    cw::SeededRandom impostor_random(cw::fuzz::kFixtureSeed ^ 0xbad);
    cw::session::EngineOptions options;
    options.clock = &f->clock;
    options.random = &impostor_random;
    options.one_time_pre_key_batch = 2;
    options.one_time_pre_key_refill_below = 1;
    auto impostor = Take("open impostor", cw::session::Engine::Open(&store, "alice", options));
    const cw::wire::PreKeyBundle b = Take("bob bundle", f->bob->MakeBundle(true));
    Check("impostor processes bundle", impostor->ProcessBundle(bob, b));
    auto m = Take("impostor encrypts", impostor->Encrypt(bob, cw::AsBytes("it is me, alice")));
    Add("session_decrypt", Typed(MessageType::kPreKey, m.body));
  }

  // Alice starts over from a fresh bundle (as after reinstalling with the same identity): a new
  // PreKeySignalMessage that bob accepts.
  {
    const cw::wire::PreKeyBundle b = Take("bob bundle", f->bob->MakeBundle(true));
    Check("alice processes a new bundle", f->alice->ProcessBundle(bob, b));
    auto m = Take("alice encrypts", f->alice->Encrypt(bob, cw::AsBytes("new session")));
    if (m.type != MessageType::kPreKey) Die("expected a PreKeySignalMessage");
    Add("session_decrypt", Typed(MessageType::kPreKey, m.body));
    Add("signal_message_parse", Typed(MessageType::kPreKey, m.body));
  }

  // A synthetic bundle with extreme field values.
  {
    cw::wire::PreKeyBundle b;
    b.registration_id = 0xffffffff;
    b.device_id = 0;
    b.identity_key[0] = 0x05;
    random.Fill(b.identity_key.data() + 1, 32);
    b.signed_pre_key.id = 0x7fffffff;
    b.signed_pre_key.public_key[0] = 0x05;
    random.Fill(b.signed_pre_key.public_key.data() + 1, 32);
    random.Fill(b.signed_pre_key.signature.data(), b.signed_pre_key.signature.size());
    b.one_time_pre_key = cw::wire::OneTimePreKeyPublic{1u << 24, {}};
    b.one_time_pre_key->public_key[0] = 0x05;
    Add("bundle_decode", cw::wire::EncodeBundle(b));
  }

  // --- content_decode: one content of each kind ---
  const std::string& group_id = f->group_id;
  {
    cw::wire::Content c;
    c.kind = cw::wire::ContentKind::kMessage;
    c.body = cw::SecretBytes(cw::AsBytes("Blood pressure 120/80 at 09:00."));
    Add("content_decode", FromSpan(Take("encode content", cw::wire::EncodeContent(c)).reveal()));
  }
  {
    cw::wire::Content c;
    c.kind = cw::wire::ContentKind::kSenderKey;
    c.group_id = group_id;
    c.body = cw::SecretBytes(skdm);
    Add("content_decode", FromSpan(Take("encode content", cw::wire::EncodeContent(c)).reveal()));
  }
  {
    cw::wire::Content c;
    c.kind = cw::wire::ContentKind::kGroupMembers;
    c.group_id = group_id;
    c.members = {"alice", "bob", "dr.carol@ward-7", "nurse\xc3\xa9"};
    Add("content_decode", FromSpan(Take("encode content", cw::wire::EncodeContent(c)).reveal()));
    // The same membership with the key its admin lists for each member (none for one of them).
    c.member_keys = {f->alice->identity_key(), f->bob->identity_key(), std::nullopt,
                     f->alice->identity_key()};
    Add("content_decode", FromSpan(Take("encode content", cw::wire::EncodeContent(c)).reveal()));
  }
  {
    cw::wire::Content c;  // a group message body that is empty
    c.kind = cw::wire::ContentKind::kMessage;
    c.group_id = "g";
    Add("content_decode", FromSpan(Take("encode content", cw::wire::EncodeContent(c)).reveal()));
  }

  // --- attachment_decode: descriptors at typical and extreme field values ---
  {
    // Its own seed, so the corpora generated after it stay as they were.
    cw::SeededRandom random(cw::fuzz::kFixtureSeed ^ 0xa77ac4);
    cw::wire::AttachmentDescriptor d;
    random.Fill(d.blob_id.data(), d.blob_id.size());
    d.key = cw::SecretBytes(cw::wire::kAttachmentKeySize);
    random.Fill(d.key.reveal_mutable().data(), d.key.size());
    random.Fill(d.digest.data(), d.digest.size());
    d.size = 20u << 20;
    d.file_name = "lab-results.pdf";
    d.media_type = "application/pdf";
    Add("attachment_decode", FromSpan(Take("encode attachment", cw::wire::EncodeAttachment(d)).reveal()));
    d.size = 0;
    d.chunk_size = 1;
    d.file_name = "caf\xc3\xa9 x-ray (2).png";
    d.media_type = "";
    Add("attachment_decode", FromSpan(Take("encode attachment", cw::wire::EncodeAttachment(d)).reveal()));
    d.size = cw::wire::kMaxAttachmentSize;
    d.chunk_size = cw::wire::kMaxAttachmentChunkPlain;
    d.file_name = std::string(cw::wire::kMaxFileNameSize, 'n');
    d.media_type = "image/png";
    Add("attachment_decode", FromSpan(Take("encode attachment", cw::wire::EncodeAttachment(d)).reveal()));
  }

  // --- app_message_decode: one message of each kind, with and without a purpose ---
  {
    const std::pair<cw::wire::AppKind, const char*> kinds[] = {
        {cw::wire::AppKind::kText, "treatment"},      {cw::wire::AppKind::kFile, "treatment"},
        {cw::wire::AppKind::kReceipt, ""},            {cw::wire::AppKind::kConsent, ""},
        {cw::wire::AppKind::kConsentWithdrawal, ""},  {cw::wire::AppKind::kAuditHead, ""},
        {cw::wire::AppKind::kErasure, ""},            {cw::wire::AppKind::kText, "x-research-study-12"},
        {cw::wire::AppKind::kDirectEndpoint, ""},     {cw::wire::AppKind::kInviteAnswer, ""},
    };
    for (const auto& [kind, purpose] : kinds) {
      cw::wire::AppMessage m;
      m.kind = kind;
      m.purpose = purpose;
      m.payload = cw::SecretBytes(cw::AsBytes("Blood pressure 120/80 at 09:00."));
      Add("app_message_decode", FromSpan(Take("encode app message", cw::wire::EncodeAppMessage(m)).reveal()));
    }
    cw::wire::AppMessage empty;  // empty text, no purpose
    Add("app_message_decode", FromSpan(Take("encode app message", cw::wire::EncodeAppMessage(empty)).reveal()));
  }

  // --- receipt_decode: each type, one reference and the most allowed ---
  {
    cw::wire::Receipt r;
    r.type = cw::wire::ReceiptType::kDelivered;
    cw::wire::ReceiptRef ref;
    ref.fill(0xa5);
    r.refs.push_back(ref);
    Add("receipt_decode", Take("encode receipt", cw::wire::EncodeReceipt(r)));
    r.type = cw::wire::ReceiptType::kRead;
    while (r.refs.size() < cw::wire::kMaxReceiptRefs) {
      ref.fill(static_cast<uint8_t>(r.refs.size()));  // fixed bytes: the other corpora keep their seeds
      r.refs.push_back(ref);
    }
    Add("receipt_decode", Take("encode receipt", cw::wire::EncodeReceipt(r)));
    r.refs.resize(3);
    Add("receipt_decode", Take("encode receipt", cw::wire::EncodeReceipt(r)));
  }

  // --- direct_endpoint_decode: listening over IPv4, IPv6 and a name, and not listening ---
  {
    cw::wire::DirectEndpoint e;
    e.link_key.fill(0x3c);
    Add("direct_endpoint_decode", Take("encode direct endpoint", cw::wire::EncodeDirectEndpoint(e)));
    for (const char* host : {"127.0.0.1", "fe80::1", "clinic-gw.example.org"}) {
      e.host = host;
      e.port = 40123;
      Add("direct_endpoint_decode", Take("encode direct endpoint", cw::wire::EncodeDirectEndpoint(e)));
    }
  }

  // --- direct_frame_decode: an ack, a small and a largest deliver frame ---
  {
    cw::wire::DirectFrame f;
    f.id.fill(0x77);
    f.type = cw::wire::DirectFrameType::kAck;
    Add("direct_frame_decode", Take("encode direct frame", cw::wire::EncodeDirectFrame(f)));
    f.type = cw::wire::DirectFrameType::kDeliver;
    f.envelope = Bytes(300, 0x5e);
    Add("direct_frame_decode", Take("encode direct frame", cw::wire::EncodeDirectFrame(f)));
    f.envelope = Bytes(cw::wire::kMaxDirectEnvelopeSize, 0x6f);
    Add("direct_frame_decode", Take("encode direct frame", cw::wire::EncodeDirectFrame(f)));
  }

  // --- padding: padded plaintexts around the bucket edges, and one unpadded input ---
  for (size_t n : {0, 1, 200, 255, 256, 300, 1000, 2900}) {
    std::vector<uint8_t> text(n);
    if (n > 0) random.Fill(text.data(), text.size());  // data() may be null when empty
    Add("padding", FromSpan(Take("pad", cw::wire::Pad(text)).reveal()));
  }
  Add("padding", cw::ToBytes("not padded at all"));

  // --- secretstream: streams under the target's key (0x4b x 32) to pull, as an attachment's chunks are,
  // and plaintexts to push. The push state comes from init_pull on a drawn header (the same state
  // init_push builds), so the seeds do not depend on libsodium's own generator. ---
  {
    uint8_t key[crypto_secretstream_xchacha20poly1305_KEYBYTES];
    std::fill(std::begin(key), std::end(key), uint8_t{0x4b});
    auto chunk = [](Bytes& out, uint8_t prefix_tag, bool with_tag, const Bytes& bytes) {
      if (with_tag) out.push_back(prefix_tag);
      out.push_back(static_cast<uint8_t>(bytes.size()));
      out.push_back(static_cast<uint8_t>(bytes.size() >> 8));
      out.insert(out.end(), bytes.begin(), bytes.end());
    };
    for (const std::vector<size_t>& sizes :
         {std::vector<size_t>{0}, std::vector<size_t>{1, 15, 16, 17}, std::vector<size_t>{100, 100, 33},
          std::vector<size_t>{4096, 7}}) {
      uint8_t header[crypto_secretstream_xchacha20poly1305_HEADERBYTES];
      random.Fill(header, sizeof header);
      crypto_secretstream_xchacha20poly1305_state push;
      crypto_secretstream_xchacha20poly1305_init_pull(&push, header, key);
      Bytes pull_seed{0x00};
      pull_seed.insert(pull_seed.end(), std::begin(header), std::end(header));
      Bytes push_seed{0x01};
      for (size_t k = 0; k < sizes.size(); ++k) {
        Bytes text(sizes[k]);
        if (!text.empty()) random.Fill(text.data(), text.size());
        const uint8_t tag = k + 1 == sizes.size() ? crypto_secretstream_xchacha20poly1305_TAG_FINAL
                                                  : crypto_secretstream_xchacha20poly1305_TAG_MESSAGE;
        Bytes sealed(text.size() + crypto_secretstream_xchacha20poly1305_ABYTES);
        crypto_secretstream_xchacha20poly1305_push(&push, sealed.data(), nullptr, text.data(), text.size(),
                                                   nullptr, 0, tag);
        chunk(pull_seed, 0, false, sealed);
        chunk(push_seed, tag, true, text);
      }
      Add("secretstream", pull_seed);
      Add("secretstream", push_seed);
    }
  }
}

std::string Name(const Bytes& content) {
  uint8_t hash[8];
  crypto_generichash(hash, sizeof hash, content.data(), content.size(), nullptr, 0);
  return "gen-" + cw::ToHex(cw::ByteView(hash, sizeof hash));
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s FUZZ_DIR\n", argv[0]);
    return 2;
  }
  const fs::path root(argv[1]);
  Generate();
  for (const auto& [target, inputs] : g_corpus) {
    const fs::path dir = root / target / "corpus";
    fs::create_directories(dir);
    for (const auto& entry : fs::directory_iterator(dir)) {
      if (entry.is_regular_file() && entry.path().filename().string().starts_with("gen-"))
        fs::remove(entry.path());
    }
    for (const auto& input : inputs) {
      std::ofstream out(dir / Name(input), std::ios::binary | std::ios::trunc);
      out.write(reinterpret_cast<const char*>(input.data()), static_cast<std::streamsize>(input.size()));
      if (!out) Die("cannot write into " + dir.string());
    }
    std::printf("%-22s %zu files\n", target.c_str(), inputs.size());
  }
  return 0;
}
