// Property: over random interleavings of sending, delivering in any order, dropping and redelivering between
// two parties with a session, every fresh message decrypts exactly once to what was sent, and every
// redelivery is a duplicate.
//
// The one exception is a limit of the protocol, modelled here rather than hidden: libsignal keeps the last
// 5 receiving chains (one per DH ratchet step of the peer). A message from an older chain can no longer be
// decrypted, and its redelivery is refused without being recognised as a duplicate. The model tracks chains
// the way the Double Ratchet creates them: a party starts a new sending chain when it decrypts a message from
// a peer chain it had not seen.
#include <gtest/gtest.h>
#include <rapidcheck.h>
#include <rapidcheck/gtest.h>

#include "tests/session/session_fixture.h"

namespace cw::session {
namespace {

using testing::CodeOf;
using testing::Party;
using testing::Text;
using testing::World;

constexpr int kReceiverChains = 5;  // libsignal's MAX_RECEIVER_CHAINS

enum class OpKind { kSendAB, kSendBA, kDeliver, kDrop, kRedeliver };

struct Op {
  OpKind kind;
  uint32_t pick;  // which in-flight or delivered message, modulo the count
};

struct InFlight {
  int from;  // 0 = A, 1 = B
  int chain;
  Ciphertext ct;
  std::string text;
};

struct Side {
  int sending_chain;
  int newest_seen;  // newest peer chain this side has decrypted from
};

// Found by rapidcheck through ADL, to print a failing sequence.
void showValue(const Op& op, std::ostream& os) {
  static const char* names[] = {"SendAB", "SendBA", "Deliver", "Drop", "Redeliver"};
  os << names[static_cast<int>(op.kind)] << "(" << op.pick << ")";
}

}  // namespace
}  // namespace cw::session

namespace rc {
template <>
struct Arbitrary<cw::session::Op> {
  static Gen<cw::session::Op> arbitrary() {
    using cw::session::Op;
    using cw::session::OpKind;
    return gen::build<Op>(
        gen::set(&Op::kind, gen::weightedElement<OpKind>({{4, OpKind::kSendAB},
                                                          {4, OpKind::kSendBA},
                                                          {6, OpKind::kDeliver},
                                                          {1, OpKind::kDrop},
                                                          {2, OpKind::kRedeliver}})),
        gen::set(&Op::pick, gen::inRange<uint32_t>(0, 1000)));
  }
};
}  // namespace rc

namespace cw::session {
namespace {

RC_GTEST_PROP(SessionPropertyTest, EveryFreshMessageDecryptsOnceAndEveryReplayIsDuplicate, ()) {
  const auto ops = *rc::gen::resize(60, rc::gen::container<std::vector<Op>>(rc::gen::arbitrary<Op>()));
  RC_PRE(ops.size() <= 60u);
  World world;
  Party& a = world.Add("clinician");
  Party& b = world.Add("patient");
  world.Establish(a, b);
  RC_ASSERT(!::testing::Test::HasFailure());
  Party* party[2] = {&a, &b};
  // After Establish: A sent on chain 0 and B saw it; B answered on chain 1 and A saw it; A's next chain is 1.
  Side side[2] = {{/*sending_chain=*/1, /*newest_seen=*/1}, {/*sending_chain=*/1, /*newest_seen=*/0}};

  std::vector<InFlight> in_flight, delivered;
  int sent = 0;
  for (const Op& op : ops) {
    switch (op.kind) {
      case OpKind::kSendAB:
      case OpKind::kSendBA: {
        const int from = op.kind == OpKind::kSendAB ? 0 : 1;
        const std::string text = std::to_string(sent++) + (from == 0 ? " clinician->patient" : " patient->clinician");
        auto ct = (*party[from])->Encrypt(party[1 - from]->address(), AsBytes(text));
        RC_ASSERT(ct.has_value());
        RC_ASSERT(ct->type == MessageType::kSignal);
        in_flight.push_back(InFlight{from, side[from].sending_chain, *ct, text});
        break;
      }
      case OpKind::kDeliver: {
        if (in_flight.empty()) break;
        const size_t i = op.pick % in_flight.size();
        InFlight m = in_flight[i];
        in_flight.erase(in_flight.begin() + static_cast<long>(i));
        const int to = 1 - m.from;
        const bool new_chain = m.chain > side[to].newest_seen;
        const int newest = new_chain ? m.chain : side[to].newest_seen;
        auto r = (*party[to])->Decrypt(party[m.from]->address(), m.ct);
        if (m.chain > newest - kReceiverChains) {
          RC_ASSERT(r.has_value());
          RC_ASSERT(Text(r->body) == m.text);
          RC_ASSERT(r->kind == Received::Kind::kMessage);
          if (new_chain) {
            RC_ASSERT(m.chain == side[to].newest_seen + 1);  // chains are seen in order
            side[to].newest_seen = m.chain;
            side[to].sending_chain++;
          }
          delivered.push_back(std::move(m));
        } else {
          RC_TAG("message from a dropped chain");
          RC_ASSERT(!r.has_value());
        }
        break;
      }
      case OpKind::kDrop: {
        if (in_flight.empty()) break;
        in_flight.erase(in_flight.begin() + static_cast<long>(op.pick % in_flight.size()));
        break;
      }
      case OpKind::kRedeliver: {
        if (delivered.empty()) break;
        const InFlight& m = delivered[op.pick % delivered.size()];
        const int to = 1 - m.from;
        auto before = party[to]->snapshot();
        auto r = (*party[to])->Decrypt(party[m.from]->address(), m.ct);
        if (m.chain > side[to].newest_seen - kReceiverChains) {
          RC_ASSERT(CodeOf(r) == StatusCode::kDuplicate);
        } else {
          RC_TAG("replay from a dropped chain");
          RC_ASSERT(!r.has_value());
        }
        RC_ASSERT(testing::SameState(before, party[to]->snapshot()));
        break;
      }
    }
  }
  // Whatever is still in flight and within the window decrypts now.
  for (const InFlight& m : in_flight) {
    const int to = 1 - m.from;
    if (m.chain <= std::max(side[to].newest_seen, m.chain) - kReceiverChains) continue;
    auto r = (*party[to])->Decrypt(party[m.from]->address(), m.ct);
    RC_ASSERT(r.has_value());
    RC_ASSERT(Text(r->body) == m.text);
    if (m.chain > side[to].newest_seen) {
      side[to].newest_seen = m.chain;
      side[to].sending_chain++;
    }
  }
  RC_CLASSIFY(sent > 20, "more than 20 messages");
  RC_CLASSIFY(side[0].sending_chain > 5, "more than 5 ratchet steps");
}

}  // namespace
}  // namespace cw::session
