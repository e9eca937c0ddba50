// The wire format: frames (message.h) and message bodies (protocol.h), encoded
// and decoded without any socket; every decode error names what is wrong.

#include "baton/handoff/message.h"

#include <cstdint>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "baton/handoff/protocol.h"
#include "unit_util.h"

namespace baton::handoff {
namespace {

using Bytes = std::vector<uint8_t>;

using unit::header;

Bytes concat(Bytes a, const Bytes& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

std::string frame_error(const Bytes& datagram) {
  auto r = decode_frame(datagram);
  EXPECT_FALSE(r.ok()) << "decoded, but should not have";
  return r.ok() ? "<decoded>" : r.error().message;
}

// ---- frames -------------------------------------------------------------------

TEST(Frame, HeaderLayoutIsBigEndian) {
  Bytes payload{0xaa, 0xbb, 0xcc};
  Bytes f = encode_frame(MessageType::ListenersEnd, payload);
  Bytes expected{'B', 'A', 'T', 'N', 0x00, 0x01, 0x00, 0x03, 0x00, 0x00, 0x00, 0x03, 0xaa, 0xbb, 0xcc};
  EXPECT_EQ(f, expected);
  EXPECT_EQ(kHeaderSize, 12u);
}

TEST(Frame, RoundTripForEveryMessageType) {
  for (auto type : {MessageType::Hello, MessageType::Listeners, MessageType::ListenersEnd, MessageType::Ready,
                    MessageType::Commit}) {
    SCOPED_TRACE(to_string(type));
    for (const Bytes& payload : {Bytes{}, Bytes{1}, Bytes{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}, Bytes(kMaxPayload, 0x5a)}) {
      auto f = decode_frame(encode_frame(type, payload));
      ASSERT_TRUE(f.ok()) << f.error().message;
      EXPECT_EQ(f->type, type);
      EXPECT_EQ(f->payload, payload);
    }
  }
}

TEST(Frame, TypeNames) {
  EXPECT_STREQ(to_string(MessageType::Hello), "HELLO");
  EXPECT_STREQ(to_string(MessageType::Listeners), "LISTENERS");
  EXPECT_STREQ(to_string(MessageType::ListenersEnd), "LISTENERS_END");
  EXPECT_STREQ(to_string(MessageType::Ready), "READY");
  EXPECT_STREQ(to_string(MessageType::Commit), "COMMIT");
  EXPECT_STREQ(to_string(static_cast<MessageType>(99)), "UNKNOWN");
}

TEST(FrameErrors, TruncatedHeader) {
  EXPECT_EQ(frame_error({}), "message truncated: 0 bytes, header needs 12");
  Bytes whole = encode_frame(MessageType::Commit, {});
  EXPECT_EQ(frame_error(Bytes(whole.begin(), whole.begin() + 11)), "message truncated: 11 bytes, header needs 12");
  EXPECT_EQ(frame_error(Bytes(whole.begin(), whole.begin() + 4)), "message truncated: 4 bytes, header needs 12");
}

TEST(FrameErrors, BadMagic) {
  EXPECT_EQ(frame_error(header(0x58585858, kFrameVersion, 1, 0)), "bad magic 0x58585858, expected 0x4241544e");
  // Byte-swapped magic (a little-endian writer) is not accepted either.
  EXPECT_EQ(frame_error(header(0x4e544142, kFrameVersion, 1, 0)), "bad magic 0x4e544142, expected 0x4241544e");
}

TEST(FrameErrors, WrongVersion) {
  EXPECT_EQ(frame_error(header(kMagic, 2, 1, 0)), "unsupported frame version 2, expected 1");
  EXPECT_EQ(frame_error(header(kMagic, 0, 1, 0)), "unsupported frame version 0, expected 1");
  EXPECT_EQ(frame_error(header(kMagic, 0x0100, 1, 0)), "unsupported frame version 256, expected 1");
}

TEST(FrameErrors, UnknownType) {
  EXPECT_EQ(frame_error(header(kMagic, kFrameVersion, 0, 0)), "unknown message type 0");
  EXPECT_EQ(frame_error(header(kMagic, kFrameVersion, 13, 0)), "unknown message type 13");
  EXPECT_EQ(frame_error(header(kMagic, kFrameVersion, 99, 0)), "unknown message type 99");
  EXPECT_EQ(frame_error(header(kMagic, kFrameVersion, 0xffff, 0)), "unknown message type 65535");
}

TEST(FrameErrors, LengthFieldMismatch) {
  // Says more than the datagram carries.
  EXPECT_EQ(frame_error(concat(header(kMagic, kFrameVersion, 1, 10), Bytes{1, 2, 3, 4})),
            "length field says 10 payload bytes, datagram carries 4");
  // Says less than the datagram carries.
  EXPECT_EQ(frame_error(concat(header(kMagic, kFrameVersion, 1, 2), Bytes{1, 2, 3, 4})),
            "length field says 2 payload bytes, datagram carries 4");
  EXPECT_EQ(frame_error(concat(header(kMagic, kFrameVersion, 5, 0), Bytes{0})),
            "length field says 0 payload bytes, datagram carries 1");
  EXPECT_EQ(frame_error(header(kMagic, kFrameVersion, 5, 0xffffffff)),
            "length field says 4294967295 payload bytes, more than the 61440 a message may carry");
}

TEST(FrameErrors, ChecksAreInHeaderOrder) {
  // Bad magic and bad version: the magic is reported, it is checked first.
  EXPECT_EQ(frame_error(header(0, 9, 0, 5)), "bad magic 0x00000000, expected 0x4241544e");
  // Good magic, bad version and type: the version.
  EXPECT_EQ(frame_error(header(kMagic, 9, 0, 5)), "unsupported frame version 9, expected 1");
}

// ---- payload primitives -----------------------------------------------------------

TEST(Payload, WriterAndReaderAgree) {
  PayloadWriter w;
  w.u16(0xbeef);
  w.u32(0xdeadbeef);
  w.str("");
  w.str("hello");
  Bytes expected{0xbe, 0xef, 0xde, 0xad, 0xbe, 0xef, 0x00, 0x00, 0x00, 0x05, 'h', 'e', 'l', 'l', 'o'};
  EXPECT_EQ(w.bytes(), expected);

  PayloadReader r(w.bytes());
  EXPECT_EQ(r.u16("a").value(), 0xbeef);
  EXPECT_EQ(r.u32("b").value(), 0xdeadbeefu);
  EXPECT_EQ(r.str("c").value(), "");
  EXPECT_EQ(r.str("d").value(), "hello");
  EXPECT_TRUE(r.finish("TEST").ok());
  auto past = r.u16("e");
  ASSERT_FALSE(past.ok());
  EXPECT_EQ(past.error().message, "payload truncated in field 'e'");
}

// ---- message bodies ------------------------------------------------------------------

TEST(Bodies, HelloRoundTrip) {
  Bytes p = encode(Hello{1234, 1});
  EXPECT_EQ(p, (Bytes{0x00, 0x00, 0x04, 0xd2, 0x00, 0x01}));
  auto h = decode_hello(p);
  ASSERT_TRUE(h.ok()) << h.error().message;
  EXPECT_EQ(h->pid, 1234u);
  EXPECT_EQ(h->version, 1);
  auto big = decode_hello(encode(Hello{0xfffffffe, 0xfffe}));
  ASSERT_TRUE(big.ok());
  EXPECT_EQ(big->pid, 0xfffffffeu);
  EXPECT_EQ(big->version, 0xfffe);
}

TEST(Bodies, ListenersRoundTrip) {
  for (const std::vector<ListenerEntry>& entries :
       {std::vector<ListenerEntry>{},
        std::vector<ListenerEntry>{{"echo", "tcp://127.0.0.1:0", "tcp://127.0.0.1:41234"}},
        std::vector<ListenerEntry>{{"a", "tcp://[::1]:7000", "tcp://[::1]:7000"},
                                   {"b", "unix:/run/b.sock", "unix:/run/b.sock"},
                                   {"", "", ""}}}) {
    SCOPED_TRACE(entries.size());
    auto d = decode_listeners(encode(entries));
    ASSERT_TRUE(d.ok()) << d.error().message;
    ASSERT_EQ(d->size(), entries.size());
    for (size_t i = 0; i < entries.size(); ++i) {
      EXPECT_EQ(d.value()[i].name, entries[i].name);
      EXPECT_EQ(d.value()[i].configured, entries[i].configured);
      EXPECT_EQ(d.value()[i].bound, entries[i].bound);
    }
  }
}

TEST(Bodies, ListenersEncodingLayout) {
  Bytes p = encode(std::vector<ListenerEntry>{{"n", "c", "bb"}});
  EXPECT_EQ(p, (Bytes{0x00, 0x01, 0x00, 0x01, 'n', 0x00, 0x01, 'c', 0x00, 0x02, 'b', 'b'}));
}

TEST(Bodies, ListenersEndRoundTrip) {
  Bytes p = encode(ListenersEnd{300});
  EXPECT_EQ(p, (Bytes{0x00, 0x00, 0x01, 0x2c}));
  auto e = decode_listeners_end(p);
  ASSERT_TRUE(e.ok()) << e.error().message;
  EXPECT_EQ(e->total, 300u);
}

TEST(Bodies, ReadyRoundTrip) {
  Bytes p = encode(Ready{77});
  EXPECT_EQ(p, (Bytes{0x00, 0x00, 0x00, 0x4d}));
  auto r = decode_ready(p);
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(r->pid, 77u);
}

TEST(Bodies, BodyInsideAFrameRoundTrip) {
  auto f = decode_frame(encode_frame(MessageType::Ready, encode(Ready{4321})));
  ASSERT_TRUE(f.ok()) << f.error().message;
  EXPECT_EQ(f->type, MessageType::Ready);
  auto r = decode_ready(f->payload);
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(r->pid, 4321u);
}

// ---- body errors ------------------------------------------------------------------------

template <class R>
std::string body_error(const R& r) {
  EXPECT_FALSE(r.ok()) << "decoded, but should not have";
  return r.ok() ? "<decoded>" : r.error().message;
}

TEST(BodyErrors, HelloTruncatedAndTrailing) {
  Bytes p = encode(Hello{1, 1});
  EXPECT_EQ(body_error(decode_hello(Bytes{})), "payload truncated in field 'pid'");
  EXPECT_EQ(body_error(decode_hello(Bytes(p.begin(), p.begin() + 3))), "payload truncated in field 'pid'");
  EXPECT_EQ(body_error(decode_hello(Bytes(p.begin(), p.begin() + 5))), "payload truncated in field 'version'");
  EXPECT_EQ(body_error(decode_hello(concat(p, {0}))), "HELLO payload has 1 unexpected trailing bytes");
}

TEST(BodyErrors, ListenersTruncatedAndTrailing) {
  EXPECT_EQ(body_error(decode_listeners(Bytes{})), "payload truncated in field 'count'");
  EXPECT_EQ(body_error(decode_listeners(Bytes{0x00})), "payload truncated in field 'count'");
  // Count 1, no entry at all.
  EXPECT_EQ(body_error(decode_listeners(Bytes{0x00, 0x01})), "payload truncated in field 'name'");
  // Name announces 5 bytes, has 2.
  EXPECT_EQ(body_error(decode_listeners(Bytes{0x00, 0x01, 0x00, 0x05, 'a', 'b'})),
            "payload truncated in field 'name'");
  // Name complete, configured missing.
  EXPECT_EQ(body_error(decode_listeners(Bytes{0x00, 0x01, 0x00, 0x01, 'a'})),
            "payload truncated in field 'configured'");
  // Name and configured complete, bound's length cut in half.
  EXPECT_EQ(body_error(decode_listeners(Bytes{0x00, 0x01, 0x00, 0x01, 'a', 0x00, 0x00, 0x00})),
            "payload truncated in field 'bound'");
  // Count says 2, one entry present.
  Bytes one = encode(std::vector<ListenerEntry>{{"a", "b", "c"}});
  one[1] = 2;
  EXPECT_EQ(body_error(decode_listeners(one)), "payload truncated in field 'name'");
  // Trailing bytes after a complete body.
  Bytes full = encode(std::vector<ListenerEntry>{{"a", "b", "c"}});
  EXPECT_EQ(body_error(decode_listeners(concat(full, {1, 2}))), "LISTENERS payload has 2 unexpected trailing bytes");
  // Count says 0 but entries follow.
  Bytes zero = full;
  zero[1] = 0;
  EXPECT_EQ(body_error(decode_listeners(zero)),
            "LISTENERS payload has " + std::to_string(full.size() - 2) + " unexpected trailing bytes");
}

TEST(BodyErrors, ListenersEndTruncatedAndTrailing) {
  EXPECT_EQ(body_error(decode_listeners_end(Bytes{})), "payload truncated in field 'total'");
  EXPECT_EQ(body_error(decode_listeners_end(Bytes{0, 0, 1})), "payload truncated in field 'total'");
  EXPECT_EQ(body_error(decode_listeners_end(Bytes{0, 0, 0, 1, 0, 0, 0})),
            "LISTENERS_END payload has 3 unexpected trailing bytes");
}

TEST(BodyErrors, ReadyTruncatedAndTrailing) {
  EXPECT_EQ(body_error(decode_ready(Bytes{})), "payload truncated in field 'pid'");
  EXPECT_EQ(body_error(decode_ready(Bytes{0, 0})), "payload truncated in field 'pid'");
  EXPECT_EQ(body_error(decode_ready(Bytes{0, 0, 0, 1, 9})), "READY payload has 1 unexpected trailing bytes");
}

}  // namespace
}  // namespace baton::handoff
