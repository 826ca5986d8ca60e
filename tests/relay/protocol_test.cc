// The relay command set: round trips of every command and server frame, and refusals of hostile frames with
// the documented codes. Hostile frames are built byte by byte with the test msgpack writer.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <iterator>

#include "relay/protocol.h"
#include "tests/relay/relay_test_util.h"
#include "tests/wire/msgpack_writer.h"

namespace cw::relay {
namespace {

using testing::Filled;
using testing::Mid;
using wire::testing::MsgpackWriter;

UploadPreKeys SampleUpload(size_t one_time) {
  UploadPreKeys u;
  u.mailbox = Filled<kMailboxIdSize>(1);
  u.registration_id = 4242;
  u.device_id = 1;
  u.identity_key = Filled<wire::kPublicKeySize>(5);
  u.signed_pre_key.id = 7;
  u.signed_pre_key.public_key = Filled<wire::kPublicKeySize>(6);
  u.signed_pre_key.signature = Filled<wire::kSignatureSize>(9);
  for (size_t i = 0; i < one_time; ++i) {
    u.one_time_pre_keys.push_back({static_cast<uint32_t>(i + 1), Filled<wire::kPublicKeySize>(uint8_t(i))});
  }
  return u;
}

std::vector<Command> SampleCommands() {
  std::vector<Command> out;
  uint32_t rid = 1;
  auto add = [&](CommandBody body) { out.push_back(Command{rid++, std::move(body)}); };
  add(CreateMailbox{});
  add(SampleUpload(0));
  add(SampleUpload(kMaxOneTimePreKeysPerUpload));
  add(FetchBundle{Filled<kMailboxIdSize>(2)});
  add(Deposit{Filled<kMailboxIdSize>(2), Filled<kDepositTokenSize>(3), Mid(9), Bytes(kMaxEnvelopeSize, 0xee)});
  add(Deposit{Filled<kMailboxIdSize>(2), Filled<kDepositTokenSize>(3), Mid(10), Bytes(1, 0x01)});
  add(FetchMessages{Filled<kMailboxIdSize>(2), UINT64_MAX, kMaxFetchCount});
  add(Ack{Filled<kMailboxIdSize>(2), std::vector<MessageId>(kMaxAcksPerCommand, Mid(3))});
  add(IssueDepositToken{Filled<kMailboxIdSize>(4)});
  add(IssueDepositToken{Filled<kMailboxIdSize>(4), 7 * 24 * 3600 * 1000ull});  // an invite's, claimable a week
  add(RevokeDepositToken{Filled<kMailboxIdSize>(4), Filled<kDepositTokenSize>(8)});
  add(CreateAttachment{100ull << 20});
  add(PutAttachmentChunk{Filled<kAttachmentIdSize>(1), 65536, Bytes(kMaxAttachmentChunk, 0x11)});
  add(GetAttachmentChunk{Filled<kAttachmentIdSize>(1), 0, kMaxAttachmentChunk});
  add(GetStats{});
  return out;
}

TEST(RelayProtocol, EveryCommandRoundTrips) {
  for (const Command& c : SampleCommands()) {
    const Bytes encoded = EncodeCommand(c);
    EXPECT_LE(encoded.size(), kMaxCommandSize) << "command " << int(TypeOf(c.body));
    auto decoded = DecodeCommand(encoded);
    ASSERT_TRUE(decoded.has_value()) << "command " << int(TypeOf(c.body)) << ": " << decoded.error().message;
    EXPECT_EQ(*decoded, c);
  }
}

TEST(RelayProtocol, EveryServerFrameRoundTrips) {
  std::vector<ServerFrame> frames;
  auto ok = [](CommandType t, ResponseBody b) {
    Response r;
    r.request_id = 77;
    r.command = static_cast<uint8_t>(t);
    r.body = std::move(b);
    return ServerFrame(std::move(r));
  };
  frames.push_back(ok(CommandType::kCreateMailbox, MailboxCreated{Filled<kMailboxIdSize>(3)}));
  frames.push_back(ok(CommandType::kUploadPreKeys, PreKeysStored{100}));
  frames.push_back(ok(CommandType::kFetchBundle, BundleFound{Bytes(200, 1)}));
  frames.push_back(ok(CommandType::kDeposit, NoBody{}));
  frames.push_back(ok(CommandType::kFetchMessages, FetchDone{3, 99, true}));
  frames.push_back(ok(CommandType::kAck, Acked{2}));
  frames.push_back(ok(CommandType::kIssueDepositToken, TokenIssued{Filled<kDepositTokenSize>(4)}));
  frames.push_back(ok(CommandType::kRevokeDepositToken, NoBody{}));
  frames.push_back(ok(CommandType::kCreateAttachment, AttachmentCreated{Filled<kAttachmentIdSize>(5)}));
  frames.push_back(ok(CommandType::kPutAttachmentChunk, ChunkStored{1234}));
  frames.push_back(ok(CommandType::kGetAttachmentChunk, ChunkData{5000, Bytes(kMaxAttachmentChunk, 2)}));
  frames.push_back(ok(CommandType::kStats, RelayStatsView{1, 2, 3, 4, 5, 6, 7, 8, 9}));
  frames.push_back(ServerFrame(ErrorResponse(5, 4, ResponseCode::kDepositRefused, "deposit refused")));
  frames.push_back(ServerFrame(ErrorResponse(0, 200, ResponseCode::kUnknownCommand, "unknown command")));
  frames.push_back(ServerFrame(Delivery{0, Filled<kMailboxIdSize>(1), 17, Mid(4), Bytes(kMaxEnvelopeSize, 3)}));
  frames.push_back(ServerFrame(PreKeysLow{Filled<kMailboxIdSize>(1), 9}));
  for (const auto& f : frames) {
    const Bytes encoded = EncodeServerFrame(f);
    EXPECT_LE(encoded.size(), kMaxServerFrameSize);
    auto decoded = DecodeServerFrame(encoded);
    ASSERT_TRUE(decoded.has_value()) << decoded.error().ToString();
    EXPECT_EQ(*decoded, f);
  }
}

TEST(RelayProtocol, OversizedFrameIsTooLargeBeforeParsing) {
  Bytes big(kMaxCommandSize + 1, 0x90);
  auto d = DecodeCommand(big);
  ASSERT_FALSE(d.has_value());
  EXPECT_EQ(d.error().code, ResponseCode::kTooLarge);
}

TEST(RelayProtocol, EnvelopeOverLimitIsRefused) {
  Command c{1, Deposit{Filled<kMailboxIdSize>(2), Filled<kDepositTokenSize>(3), Mid(9),
                       Bytes(kMaxEnvelopeSize + 1, 0xee)}};
  auto d = DecodeCommand(EncodeCommand(c));
  ASSERT_FALSE(d.has_value());
  EXPECT_NE(d.error().code, ResponseCode::kOk);
}

TEST(RelayProtocol, UnknownCommandKeepsRequestIdAndNumber) {
  const Bytes f = MsgpackWriter().Array(3).Uint(kProtocolVersion).Uint(555).Uint(99).bytes();
  auto d = DecodeCommand(f);
  ASSERT_FALSE(d.has_value());
  EXPECT_EQ(d.error().code, ResponseCode::kUnknownCommand);
  EXPECT_EQ(d.error().request_id, 555u);
  EXPECT_EQ(d.error().command, 99);
}

TEST(RelayProtocol, OtherVersionIsUnsupportedEvenWithUnknownShape) {
  const Bytes f = MsgpackWriter().Array(4).Uint(2).Uint(8).Uint(1).Str("future").bytes();
  auto d = DecodeCommand(f);
  ASSERT_FALSE(d.has_value());
  EXPECT_EQ(d.error().code, ResponseCode::kUnsupportedVersion);
  EXPECT_EQ(d.error().request_id, 8u);
}

TEST(RelayProtocol, VersionIsRequiredOnEveryCommand) {
  // [request_id, command] without the version: the first element is read as version 7.
  const Bytes f = MsgpackWriter().Array(3).Uint(7).Uint(1).Uint(1).bytes();
  auto d = DecodeCommand(f);
  ASSERT_FALSE(d.has_value());
  EXPECT_EQ(d.error().code, ResponseCode::kUnsupportedVersion);
  const Bytes no_version = MsgpackWriter().Array(3).Str("v").Uint(1).Uint(1).bytes();
  auto d2 = DecodeCommand(no_version);
  ASSERT_FALSE(d2.has_value());
  EXPECT_EQ(d2.error().code, ResponseCode::kMalformed);
}

TEST(RelayProtocol, MalformedShapesAreMalformed) {
  const std::vector<Bytes> bad = {
      {},                                                                   // empty
      {0xc1},                                                               // never-used msgpack byte
      MsgpackWriter().Uint(1).bytes(),                                      // not an array
      MsgpackWriter().Array(2).Uint(1).Uint(1).bytes(),                     // too short
      MsgpackWriter().Array(4).Uint(1).Uint(1).Uint(1).Nil().bytes(),       // create mailbox with an argument
      MsgpackWriter().Array(4).Uint(1).Uint(1).Uint(3).Bin(15, 1).bytes(),  // fetch bundle, 15-byte mailbox id
      MsgpackWriter().Array(4).Uint(1).Uint(1).Uint(3).Str("0123456789abcdef").bytes(),  // str for bin
      MsgpackWriter().Array(6).Uint(1).Uint(1).Uint(5).Bin(16, 1).Uint(0).Uint(0).bytes(),  // fetch 0 messages
      MsgpackWriter().Array(7).Uint(1).Uint(1).Uint(4).Bin(16, 1).Bin(32, 1).Bin(16, 1).Bin(0, 0).bytes(),  // empty envelope
      MsgpackWriter().Array(3).Uint(1).NegativeFixint(-1).Uint(1).bytes(),  // negative request id
      MsgpackWriter().Array(5).Uint(1).Uint(1).Uint(7).Bin(16, 1).Uint(0).bytes(),  // claimable within 0 ms
      MsgpackWriter().Array(5).Uint(1).Uint(1).Uint(7).Bin(16, 1).Str("1").bytes(),  // str for the claim time
      MsgpackWriter().Array(6).Uint(1).Uint(1).Uint(7).Bin(16, 1).Uint(1).Uint(1).bytes(),  // a third field
  };
  for (size_t i = 0; i < bad.size(); ++i) {
    auto d = DecodeCommand(bad[i]);
    ASSERT_FALSE(d.has_value()) << "input " << i;
    EXPECT_EQ(d.error().code, ResponseCode::kMalformed) << "input " << i;
  }
  // Trailing bytes after one valid command.
  Bytes trailing = EncodeCommand(Command{1, GetStats{}});
  trailing.push_back(0x00);
  auto d = DecodeCommand(trailing);
  ASSERT_FALSE(d.has_value());
  EXPECT_EQ(d.error().code, ResponseCode::kMalformed);
}

TEST(RelayProtocol, HugeDeclaredLengthsAreRefusedWithoutAllocating) {
  // An array header claiming 2^32-1 elements and a bin header claiming 4 GiB, with no bytes behind them.
  const Bytes arr = MsgpackWriter().Raw(std::vector<uint8_t>{0xdd, 0xff, 0xff, 0xff, 0xff}).bytes();
  EXPECT_FALSE(DecodeCommand(arr).has_value());
  const Bytes bin = MsgpackWriter().Array(4).Uint(1).Uint(1).Uint(3).Raw(std::vector<uint8_t>{0xc6, 0xff, 0xff, 0xff, 0xff}).bytes();
  EXPECT_FALSE(DecodeCommand(bin).has_value());
  // Deep nesting.
  MsgpackWriter deep;
  for (int i = 0; i < 64; ++i) deep.Array(1);
  deep.Uint(1);
  EXPECT_FALSE(DecodeCommand(deep.bytes()).has_value());
}

// An invite's token is claimable for at most a year; the 1-field form (older clients) means claimed at once.
TEST(RelayProtocol, AClaimTimeOverAYearIsLimitExceeded) {
  auto d = DecodeCommand(EncodeCommand(Command{1, IssueDepositToken{Filled<kMailboxIdSize>(4), kMaxClaimWithinMillis + 1}}));
  ASSERT_FALSE(d.has_value());
  EXPECT_EQ(d.error().code, ResponseCode::kLimitExceeded);
  auto old = DecodeCommand(MsgpackWriter().Array(4).Uint(1).Uint(1).Uint(7).Bin(16, 4).bytes());
  ASSERT_TRUE(old.has_value());
  EXPECT_EQ(std::get<IssueDepositToken>(old->body).claim_within_millis, 0u);
}

TEST(RelayProtocol, TooManyOneTimePreKeysIsLimitExceeded) {
  Bytes f = EncodeCommand(Command{1, SampleUpload(kMaxOneTimePreKeysPerUpload + 1)});
  auto d = DecodeCommand(f);
  ASSERT_FALSE(d.has_value());
  EXPECT_EQ(d.error().code, ResponseCode::kLimitExceeded);
  Command acks{2, Ack{Filled<kMailboxIdSize>(2), std::vector<MessageId>(kMaxAcksPerCommand + 1, Mid(1))}};
  auto d2 = DecodeCommand(EncodeCommand(acks));
  ASSERT_FALSE(d2.has_value());
  EXPECT_EQ(d2.error().code, ResponseCode::kLimitExceeded);
}

TEST(RelayProtocol, ResponseBodyMustMatchCommandAndCode) {
  // An OK deposit response carrying a body, and an error response carrying one: both refused.
  const Bytes extra = MsgpackWriter().Array(7).Uint(1).Uint(1).Uint(0).Uint(4).Uint(0).Str("").Uint(1).bytes();
  EXPECT_FALSE(DecodeServerFrame(extra).has_value());
  const Bytes err_body = MsgpackWriter().Array(7).Uint(1).Uint(1).Uint(0).Uint(1).Uint(5).Str("x").Bin(16, 1).bytes();
  EXPECT_FALSE(DecodeServerFrame(err_body).has_value());
  const Bytes unknown_code = MsgpackWriter().Array(6).Uint(1).Uint(1).Uint(0).Uint(4).Uint(200).Str("").bytes();
  EXPECT_FALSE(DecodeServerFrame(unknown_code).has_value());
}

// The fuzz target's seed corpus replayed here too: every seed decodes to a command or a documented error.
TEST(RelayProtocol, FuzzSeedCorpusDecodes) {
  namespace fs = std::filesystem;
  size_t seeds = 0;
  size_t accepted = 0;
  for (const auto& e : fs::directory_iterator(CW_RELAY_FUZZ_CORPUS)) {
    std::ifstream in(e.path(), std::ios::binary);
    Bytes data((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    ++seeds;
    auto d = DecodeCommand(data);
    if (d) {
      ++accepted;
      EXPECT_EQ(DecodeCommand(EncodeCommand(*d)).value(), *d) << e.path();
    }
  }
  EXPECT_GE(seeds, 12u);
  EXPECT_GE(accepted, 12u);
}

}  // namespace
}  // namespace cw::relay
