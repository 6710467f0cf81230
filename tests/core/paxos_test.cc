// Acceptor step function and message codec: promises only grow, a value is
// accepted only at a ballot not below the promise, durability comes first.
#include "node/core/paxos.h"

#include <gtest/gtest.h>

#include <algorithm>

namespace shoal::core {
namespace {

NodeId node(std::uint8_t a) {
  NodeId id;
  id.bytes[0] = a;
  return id;
}

RegisterValue value(std::uint64_t generation, std::uint64_t version) {
  RegisterValue v;
  v.generation = generation;
  v.acceptors = {node(1), node(2), node(3)};
  v.placement.project = "p";
  v.placement.version = version;
  v.placement.epoch = 1;
  v.placement.primary = node(1);
  v.placement.replicas = v.acceptors;
  return v;
}

TEST(Acceptor, PromisesHigherBallotAndPersistsFirst) {
  const AcceptorStep s = acceptor_step({}, Prepare{"p", 0, {3, node(1)}});
  ASSERT_TRUE(s.write.has_value());
  EXPECT_EQ(s.write->promised, (Ballot{3, node(1)}));
  const auto* promise = std::get_if<Promise>(&s.reply);
  ASSERT_NE(promise, nullptr);
  EXPECT_FALSE(promise->value.has_value());
}

TEST(Acceptor, RefusesLowerPrepareAndNamesItsPromise) {
  AcceptorRecord r;
  r.promised = {5, node(2)};
  const AcceptorStep s = acceptor_step(r, Prepare{"p", 0, {4, node(9)}});
  EXPECT_FALSE(s.write.has_value());
  const auto* reject = std::get_if<Reject>(&s.reply);
  ASSERT_NE(reject, nullptr);
  EXPECT_EQ(reject->promised, r.promised);
}

TEST(Acceptor, SamePrepareAgainIsAnsweredWithoutAWrite) {
  AcceptorRecord r;
  r.promised = {5, node(2)};
  const AcceptorStep s = acceptor_step(r, Prepare{"p", 0, {5, node(2)}});
  EXPECT_FALSE(s.write.has_value());
  EXPECT_TRUE(std::holds_alternative<Promise>(s.reply));
}

TEST(Acceptor, PromiseReportsAcceptedValue) {
  AcceptorRecord r;
  r.promised = {2, node(1)};
  r.accepted = {2, node(1)};
  r.value = value(0, 4);
  const AcceptorStep s = acceptor_step(r, Prepare{"p", 0, {3, node(2)}});
  const auto* promise = std::get_if<Promise>(&s.reply);
  ASSERT_NE(promise, nullptr);
  EXPECT_EQ(promise->accepted, (Ballot{2, node(1)}));
  EXPECT_EQ(promise->value, r.value);
}

TEST(Acceptor, AcceptsAtPromisedBallotAndPrePromisesNext) {
  AcceptorRecord r;
  r.promised = {3, node(1)};
  const AcceptorStep s = acceptor_step(r, Accept{"p", 0, {3, node(1)}, value(0, 1), {4, node(1)}});
  ASSERT_TRUE(s.write.has_value());
  EXPECT_EQ(s.write->accepted, (Ballot{3, node(1)}));
  EXPECT_EQ(s.write->promised, (Ballot{4, node(1)}));
  EXPECT_TRUE(std::holds_alternative<Accepted>(s.reply));
}

TEST(Acceptor, RefusesAcceptBelowPromise) {
  AcceptorRecord r;
  r.promised = {7, node(2)};
  const AcceptorStep s = acceptor_step(r, Accept{"p", 0, {6, node(1)}, value(0, 1), {7, node(1)}});
  EXPECT_FALSE(s.write.has_value());
  EXPECT_TRUE(std::holds_alternative<Reject>(s.reply));
}

TEST(Acceptor, NextOfAnotherProposerIsNotPromised) {
  const AcceptorStep s = acceptor_step({}, Accept{"p", 0, {3, node(1)}, value(0, 1), {4, node(2)}});
  ASSERT_TRUE(s.write.has_value());
  EXPECT_EQ(s.write->promised, (Ballot{3, node(1)}));
}

TEST(Acceptor, RetransmittedAcceptIsAcknowledgedButAnotherValueAtThatBallotIsNot) {
  AcceptorRecord r;
  const Accept first{"p", 0, {3, node(1)}, value(0, 1), {4, node(1)}};
  r = *acceptor_step(r, first).write;
  const AcceptorStep again = acceptor_step(r, first);
  EXPECT_FALSE(again.write.has_value());
  EXPECT_TRUE(std::holds_alternative<Accepted>(again.reply));
  Accept other = first;
  other.value.placement.version = 99;
  const AcceptorStep different = acceptor_step(r, other);
  EXPECT_FALSE(different.write.has_value());
  EXPECT_TRUE(std::holds_alternative<Reject>(different.reply));
}

TEST(Acceptor, RefusesValueOfAnotherGeneration) {
  const AcceptorStep s = acceptor_step({}, Accept{"p", 1, {3, node(1)}, value(0, 1), {4, node(1)}});
  EXPECT_TRUE(std::holds_alternative<Reject>(s.reply));
}

TEST(Messages, RoundTripEveryKind) {
  RegisterValue v = value(2, 9);
  v.closed = true;
  v.placement.last_ack.seq = 4;
  v.placement.last_ack.id[0] = 0xab;
  v.placement.last_ack.epoch = 3;
  v.placement.preferred_dc = "dc-b";
  v.placement.quota_bytes = 1 << 20;
  v.placement.state = ProjectState::kRunning;
  const std::vector<Message> all = {
      Prepare{"proj.1", 2, {5, node(3)}},
      Promise{"proj.1", 2, {5, node(3)}, {4, node(2)}, v},
      Promise{"proj.1", 2, {5, node(3)}, {}, std::nullopt},
      Accept{"proj.1", 2, {5, node(3)}, v, {6, node(3)}},
      Accepted{"proj.1", 2, {5, node(3)}},
      Reject{"proj.1", 2, {5, node(3)}, {8, node(1)}},
      Locate{"proj.1", 0},
      Located{"proj.1", 3, true, {node(1), node(2), node(3)}},
      Inquire{"proj.1", 0, Hash256{1, 2, 3}},
      Inquired{"proj.1", 0, true, 4, Hash256{9}},
      Forward{"proj.1", 0, 7, "POST", "/v1/projects/proj.1/move", R"({"to":"node-3"})"},
      ForwardReply{"proj.1", 0, 7, 202, R"({"operation":4})"},
  };
  for (const Message& m : all) {
    const Bytes wire = encode_message(m);
    auto back = decode_message(wire);
    ASSERT_TRUE(back.has_value()) << back.error().message;
    EXPECT_EQ(encode_message(*back), wire);
    EXPECT_EQ(back->index(), m.index());
  }
  const auto promise = decode_message(encode_message(all[1]));
  EXPECT_EQ(std::get<Promise>(*promise).value, v);
}

// Values written before last_ack carried its epoch ([id, seq]) still read,
// with epoch 0 (older than any real epoch, so they never cover a copy).
TEST(Messages, LastAckWithoutEpochReadsAsEpochZero) {
  RegisterValue v = value(0, 1);
  v.placement.last_ack.seq = 4;
  v.placement.last_ack.epoch = 3;
  Bytes wire = encode_message(Promise{"proj", 0, {5, node(3)}, {4, node(2)}, v});
  // [id (bin 32), seq 4, epoch 3] -> [id, seq 4]
  const Bytes new_form = {0x93, 0xc4, 0x20};
  auto at = std::search(wire.begin(), wire.end(), new_form.begin(), new_form.end());
  ASSERT_NE(at, wire.end());
  *at = 0x92;
  const auto epoch_byte = at + 3 + 32 + 1;
  ASSERT_EQ(*epoch_byte, 0x03);
  wire.erase(epoch_byte);
  auto decoded = decode_message(wire);
  ASSERT_TRUE(decoded.has_value()) << decoded.error().message;
  const RegisterValue back = *std::get<Promise>(*decoded).value;
  EXPECT_EQ(back.placement.last_ack.seq, 4u);
  EXPECT_EQ(back.placement.last_ack.epoch, 0u);
}

TEST(Messages, GarbageAndTruncationAreErrorsNotCrashes) {
  const Bytes wire = encode_message(Accept{"proj", 0, {5, node(3)}, value(0, 1), {6, node(3)}});
  for (std::size_t cut = 0; cut < wire.size(); ++cut) {
    EXPECT_FALSE(decode_message(ByteView(wire.data(), cut)).has_value()) << cut;
  }
  Bytes bad = wire;
  for (std::size_t i = 0; i < bad.size(); ++i) {
    bad[i] ^= 0xff;
    (void)decode_message(bad);  // Must not crash; may or may not parse.
    bad[i] ^= 0xff;
  }
  EXPECT_FALSE(decode_message(encode_message(Prepare{"bad/id", 0, {1, node(1)}})).has_value());
}

TEST(Messages, ForwardRoundTripsFieldByField) {
  const Forward f{"proj.1", 0, (std::uint64_t{5} << 32) + 1, "POST", "/v1/projects/proj.1/save", "{}"};
  auto back = decode_message(encode_message(f));
  ASSERT_TRUE(back.has_value()) << back.error().message;
  const auto& got = std::get<Forward>(*back);
  EXPECT_EQ(got.request_id, f.request_id);
  EXPECT_EQ(got.method, f.method);
  EXPECT_EQ(got.path, f.path);
  EXPECT_EQ(got.body, f.body);
  const ForwardReply r{"proj.1", 0, 9, 200, std::string(kForwardBodyBytesMax, 'x')};
  auto reply = decode_message(encode_message(r));
  ASSERT_TRUE(reply.has_value()) << reply.error().message;
  EXPECT_EQ(std::get<ForwardReply>(*reply).status, 200u);
  EXPECT_EQ(std::get<ForwardReply>(*reply).body, r.body);
  // The largest forward fits a datagram's plaintext (4096 less the seal,
  // the tag byte and the sender id) with room to spare.
  const Forward largest{std::string(kProjectIdBytesMax, 'p'), 0, ~std::uint64_t{0},
                        std::string(kForwardMethodBytesMax, 'M'), std::string(kForwardPathBytesMax, '/'),
                        std::string(kForwardBodyBytesMax, 'b')};
  EXPECT_LT(encode_message(largest).size(), 3500u);
}

TEST(Messages, OversizeForwardsAreRefusedWithTheLimit) {
  Forward f{"proj", 0, 1, "POST", "/v1/projects/proj/save", std::string(kForwardBodyBytesMax + 1, 'b')};
  const Status checked = check_forward(f);
  ASSERT_FALSE(checked.has_value());
  EXPECT_NE(checked.error().message.find(std::to_string(kForwardBodyBytesMax)), std::string::npos);
  EXPECT_FALSE(decode_message(encode_message(f)).has_value());
  f.body = "{}";
  EXPECT_TRUE(check_forward(f).has_value());
  f.path = std::string(kForwardPathBytesMax + 1, '/');
  EXPECT_FALSE(check_forward(f).has_value());
  EXPECT_FALSE(decode_message(encode_message(f)).has_value());
  ForwardReply r{"proj", 0, 1, 200, std::string(kForwardBodyBytesMax + 1, 'x')};
  EXPECT_FALSE(check_forward_reply(r).has_value());
  EXPECT_FALSE(decode_message(encode_message(r)).has_value());
  r.body = "{}";
  r.status = 1000;
  EXPECT_FALSE(check_forward_reply(r).has_value());
  EXPECT_FALSE(decode_message(encode_message(r)).has_value());
}

}  // namespace
}  // namespace shoal::core
