// JSON export (docs/export-schema.md): a round trip gives back exactly the stored rows.
#include "storage/export.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "tests/storage/transcript_test_fixture.h"

namespace cw::storage {
namespace {

using testing::N;
using testing::Refs;
using testing::Text;
using testing::Texts;

class ExportTest : public testing::TranscriptFixture {
 protected:
  void ExpectSame(const TranscriptMessage& a, const TranscriptMessage& b) {
    EXPECT_EQ(a.conversation_id, b.conversation_id);
    EXPECT_EQ(a.sequence, b.sequence);
    EXPECT_EQ(a.message_id, b.message_id);
    EXPECT_EQ(a.direction, b.direction);
    EXPECT_EQ(a.sender, b.sender);
    EXPECT_EQ(a.sender_device, b.sender_device);
    EXPECT_EQ(a.sent_at_ms, b.sent_at_ms);
    EXPECT_EQ(a.received_at_ms, b.received_at_ms);
    EXPECT_TRUE(a.body.Equals(b.body)) << Text(a.body) << " vs " << Text(b.body);
    EXPECT_EQ(Texts(a.attachments), Texts(b.attachments));
    EXPECT_EQ(a.status, b.status);
    EXPECT_EQ(a.expires_at_ms, b.expires_at_ms);
  }
  void Populate() {
    IncomingDetails d;
    d.sent_at_ms = 1'699'999'999'000;
    d.attachments = Refs({"att:1;sha256=00ff", std::string("bin\xff\xfe", 5)});
    Receive("patient.bob", "Tengo dolor de pecho — ¿qué hago?", "r1", d);
    const uint64_t s = Send(bob_, "Call 911 now.", {"att:2"});
    CW_ST_ASSERT_OK(t_->MarkSent(bob_, s));
    CW_ST_ASSERT_OK(t_->SetDisappearingTimer(carol_, 86'400'000));
    Receive("patient.carol", std::string("\x00\x01 binary \xff body", 13), "r2");
    Receive(std::string("weird\xc3(name", 11), "x", "r3");
  }

  const std::string bob_ = Transcripts::DirectConversationId("patient.bob");
  const std::string carol_ = Transcripts::DirectConversationId("patient.carol");
};

TEST_F(ExportTest, EverythingRoundTrips) {
  Populate();
  auto json = ExportJson(*t_, std::nullopt, "dr.alice", clock_.NowMillis());
  ASSERT_TRUE(json.has_value()) << json.error().ToString();
  auto parsed = ParseExport(json->reveal());
  ASSERT_TRUE(parsed.has_value()) << parsed.error().ToString();
  EXPECT_EQ(parsed->local_name, "dr.alice");
  EXPECT_EQ(parsed->exported_at_ms, clock_.NowMillis());
  auto convs = t_->ListConversations();
  ASSERT_TRUE(convs.has_value());
  ASSERT_EQ(parsed->conversations.size(), convs->size());
  ASSERT_EQ(convs->size(), 3u);
  for (size_t i = 0; i < convs->size(); ++i) {
    const auto& ec = parsed->conversations[i];
    EXPECT_EQ(ec.info.id, (*convs)[i].id);
    EXPECT_EQ(ec.info.disappearing_ms, (*convs)[i].disappearing_ms);
    EXPECT_EQ(ec.info.created_at_ms, (*convs)[i].created_at_ms);
    auto rows = t_->All(ec.info.id);
    ASSERT_TRUE(rows.has_value());
    ASSERT_EQ(ec.messages.size(), rows->size());
    for (size_t j = 0; j < rows->size(); ++j) ExpectSame(ec.messages[j], (*rows)[j]);
  }
}

TEST_F(ExportTest, OneConversationAndItsReadableShape) {
  Populate();
  auto json = ExportJson(*t_, bob_, "dr.alice", clock_.NowMillis());
  ASSERT_TRUE(json.has_value());
  const auto doc = nlohmann::json::parse(json->reveal().begin(), json->reveal().end());
  EXPECT_EQ(doc["format"], "cipherward-transcript-export");
  EXPECT_EQ(doc["version"], 1);
  ASSERT_EQ(doc["conversations"].size(), 1u);
  const auto& msgs = doc["conversations"][0]["messages"];
  ASSERT_EQ(msgs.size(), 2u);
  EXPECT_EQ(msgs[0]["text"], "Tengo dolor de pecho — ¿qué hago?");  // readable, not only base64
  EXPECT_EQ(msgs[0]["direction"], "incoming");
  EXPECT_EQ(msgs[0]["status"], "delivered");
  EXPECT_EQ(msgs[0]["attachments"][1]["base64"], "Ymlu//4=");  // non-UTF-8 bytes survive as base64
  EXPECT_EQ(msgs[1]["direction"], "outgoing");
  EXPECT_EQ(msgs[1]["status"], "sent");
  EXPECT_EQ(msgs[1]["sender"], "dr.alice");
  CW_ST_EXPECT_CODE(ExportJson(*t_, Transcripts::DirectConversationId("nobody"), "dr.alice", 0),
                    StatusCode::kNotFound);
}

TEST_F(ExportTest, ParseRefusesWhatIsNotAnExport) {
  for (std::string bad : {"", "{}", "[1,2]", "not json", R"({"format":"other","version":1})",
                          R"({"format":"cipherward-transcript-export","version":1,"exported_at_ms":0,
                              "local_name":"a","conversations":[{"id":"x"}]})"}) {
    SCOPED_TRACE(bad);
    CW_ST_EXPECT_CODE(ParseExport(AsBytes(bad)), StatusCode::kMalformed);
  }
  CW_ST_EXPECT_CODE(ParseExport(AsBytes(R"({"format":"cipherward-transcript-export","version":2})")),
                    StatusCode::kUnsupportedVersion);
}

}  // namespace
}  // namespace cw::storage
