// The direct P2P wire formats (core/wire/direct.h): round trips, and refusal of anything else.
#include "core/wire/direct.h"

#include <gtest/gtest.h>

#include <msgpack.hpp>
#include <sstream>
#include <vector>

namespace cw::wire {
namespace {

DirectEndpoint Listening() {
  DirectEndpoint e;
  e.link_key.fill(0x42);
  e.host = "127.0.0.1";
  e.port = 40123;
  return e;
}

template <typename T>
void ExpectRejected(const Result<T>& r, StatusCode code, const std::string& what) {
  ASSERT_FALSE(r.has_value()) << what;
  EXPECT_EQ(r.error().code(), code) << what << ": " << r.error().ToString();
}

// A msgpack array written field by field, to build what the encoders refuse to.
template <typename... F>
Bytes Pack(const F&... fields) {
  std::stringstream ss;
  msgpack::packer<std::stringstream> pk(ss);
  pk.pack_array(sizeof...(fields));
  (pk.pack(fields), ...);
  const std::string s = ss.str();
  return Bytes(s.begin(), s.end());
}

msgpack::type::raw_ref Bin(const Bytes& b) {
  return msgpack::type::raw_ref(reinterpret_cast<const char*>(b.data()), static_cast<uint32_t>(b.size()));
}

TEST(DirectEndpointTest, RoundTrips) {
  for (DirectEndpoint e : {Listening(), DirectEndpoint{}}) {
    auto enc = EncodeDirectEndpoint(e);
    ASSERT_TRUE(enc.has_value()) << enc.error().ToString();
    auto dec = DecodeDirectEndpoint(*enc);
    ASSERT_TRUE(dec.has_value()) << dec.error().ToString();
    EXPECT_EQ(*dec, e);
  }
  DirectEndpoint v6 = Listening();
  v6.host = "fe80::1";
  auto enc = EncodeDirectEndpoint(v6);
  ASSERT_TRUE(enc.has_value());
  EXPECT_EQ(DecodeDirectEndpoint(*enc).value(), v6);
}

TEST(DirectEndpointTest, EncodeRefusesBadHosts) {
  for (const std::string& host : std::vector<std::string>{"a b", "evil@host", "[::1]", "host/path",
                                                          std::string(kMaxDirectHostSize + 1, 'a')}) {
    DirectEndpoint e = Listening();
    e.host = host;
    ExpectRejected(EncodeDirectEndpoint(e), StatusCode::kInvalidArgument, host);
  }
  DirectEndpoint no_port = Listening();
  no_port.port = 0;
  ExpectRejected(EncodeDirectEndpoint(no_port), StatusCode::kInvalidArgument, "host without port");
  DirectEndpoint no_host = Listening();
  no_host.host.clear();
  ExpectRejected(EncodeDirectEndpoint(no_host), StatusCode::kInvalidArgument, "port without host");
}

TEST(DirectEndpointTest, DecodeRefusesMalformed) {
  const Bytes key(kDirectKeySize, 7);
  const Bytes short_key(kDirectKeySize - 1, 7);
  ASSERT_TRUE(DecodeDirectEndpoint(Pack(1, Bin(key), std::string("h"), 1)).has_value());
  ExpectRejected(DecodeDirectEndpoint(Pack(1, Bin(short_key), std::string("h"), 1)), StatusCode::kMalformed, "key size");
  ExpectRejected(DecodeDirectEndpoint(Pack(1, Bin(key), std::string("h"), 70000)), StatusCode::kMalformed, "port");
  ExpectRejected(DecodeDirectEndpoint(Pack(1, Bin(key), std::string("h\n"), 1)), StatusCode::kMalformed, "host char");
  ExpectRejected(DecodeDirectEndpoint(Pack(1, Bin(key), std::string(""), 1)), StatusCode::kMalformed, "no host");
  ExpectRejected(DecodeDirectEndpoint(Pack(1, Bin(key), std::string("h"))), StatusCode::kMalformed, "fields");
  ExpectRejected(DecodeDirectEndpoint(Pack(2, Bin(key), std::string("h"), 1)), StatusCode::kUnsupportedVersion, "v2");
  ExpectRejected(DecodeDirectEndpoint(Bytes{}), StatusCode::kMalformed, "empty");
  Bytes trailing = EncodeDirectEndpoint(Listening()).value();
  trailing.push_back(0);
  ExpectRejected(DecodeDirectEndpoint(trailing), StatusCode::kMalformed, "trailing byte");
  Bytes truncated = EncodeDirectEndpoint(Listening()).value();
  truncated.pop_back();
  ExpectRejected(DecodeDirectEndpoint(truncated), StatusCode::kMalformed, "truncated");
}

TEST(DirectFrameTest, RoundTrips) {
  DirectFrame deliver;
  deliver.type = DirectFrameType::kDeliver;
  deliver.id.fill(0xa5);
  deliver.envelope = Bytes(kMaxDirectEnvelopeSize, 0x11);
  DirectFrame ack;
  ack.type = DirectFrameType::kAck;
  ack.id.fill(0x5a);
  for (const DirectFrame& f : {deliver, ack}) {
    auto enc = EncodeDirectFrame(f);
    ASSERT_TRUE(enc.has_value()) << enc.error().ToString();
    EXPECT_LE(enc->size(), kMaxDirectFrameSize);
    auto dec = DecodeDirectFrame(*enc);
    ASSERT_TRUE(dec.has_value()) << dec.error().ToString();
    EXPECT_EQ(*dec, f);
  }
}

TEST(DirectFrameTest, EncodeRefusesWhatDecodeWouldRefuse) {
  DirectFrame empty;
  ExpectRejected(EncodeDirectFrame(empty), StatusCode::kInvalidArgument, "deliver without envelope");
  DirectFrame big;
  big.envelope = Bytes(kMaxDirectEnvelopeSize + 1, 1);
  ExpectRejected(EncodeDirectFrame(big), StatusCode::kInvalidArgument, "envelope too large");
  DirectFrame ack;
  ack.type = DirectFrameType::kAck;
  ack.envelope = Bytes{1};
  ExpectRejected(EncodeDirectFrame(ack), StatusCode::kInvalidArgument, "ack with envelope");
  DirectFrame unknown;
  unknown.type = static_cast<DirectFrameType>(3);
  ExpectRejected(EncodeDirectFrame(unknown), StatusCode::kInvalidArgument, "unknown type");
}

TEST(DirectFrameTest, DecodeRefusesMalformed) {
  const Bytes id(kDirectMessageIdSize, 1);
  const Bytes env(10, 2);
  ASSERT_TRUE(DecodeDirectFrame(Pack(1, 1, Bin(id), Bin(env))).has_value());
  ASSERT_TRUE(DecodeDirectFrame(Pack(1, 2, Bin(id))).has_value());
  ExpectRejected(DecodeDirectFrame(Pack(1, 1, Bin(id))), StatusCode::kMalformed, "deliver without envelope");
  ExpectRejected(DecodeDirectFrame(Pack(1, 2, Bin(id), Bin(env))), StatusCode::kMalformed, "ack with envelope");
  ExpectRejected(DecodeDirectFrame(Pack(1, 3, Bin(id))), StatusCode::kMalformed, "unknown type");
  ExpectRejected(DecodeDirectFrame(Pack(1, 1, Bin(Bytes(15, 1)), Bin(env))), StatusCode::kMalformed, "short id");
  ExpectRejected(DecodeDirectFrame(Pack(1, 1, Bin(id), Bin(Bytes{}))), StatusCode::kMalformed, "empty envelope");
  ExpectRejected(DecodeDirectFrame(Pack(1, 1, Bin(id), std::string("str"))), StatusCode::kMalformed, "envelope type");
  ExpectRejected(DecodeDirectFrame(Pack(1, 1, Bin(id), Bin(Bytes(kMaxDirectEnvelopeSize + 1, 0)))),
                 StatusCode::kMalformed, "envelope too large");
  ExpectRejected(DecodeDirectFrame(Pack(9, 2, Bin(id))), StatusCode::kUnsupportedVersion, "v9");
  ExpectRejected(DecodeDirectFrame(Bytes{0xc0}), StatusCode::kMalformed, "nil");
}

}  // namespace
}  // namespace cw::wire
