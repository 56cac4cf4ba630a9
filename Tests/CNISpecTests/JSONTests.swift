import Testing
@testable import CNISpec

@Suite struct JSONTests {
    @Test(arguments: [
        #"{"a":1,"b":[true,false,null],"c":{"d":"e"}}"#,
        #"{"big":12345678901234567890,"f":1.50,"e":-2.5E+10,"z":0}"#,
        #"{"z":1,"a":2,"m":3}"#,
        #"[]"#, #"{}"#, #""x""#, #"-0.0"#,
        #"{"s":"tab\there \"quoted\" back\\slash \u0001"}"#,
    ])
    func roundTripIsLossless(_ text: String) throws {
        let parsed = try JSON.parse(text)
        #expect(parsed.serialized() == text)
        #expect(try JSON.parse(parsed.serialized()) == parsed)
    }

    @Test func keyOrderAndRawNumbersSurvive() throws {
        let v = try JSON.parse(#"{ "b" : 1.50 , "a" : 12345678901234567890 }"#)
        #expect(v.objectValue?.keys == ["b", "a"])
        #expect(v["b"] == .number("1.50"))
        #expect(v["a"] == .number("12345678901234567890"))
        #expect(v.serialized() == #"{"b":1.50,"a":12345678901234567890}"#)
    }

    @Test func unicodeEscapesDecode() throws {
        let v = try JSON.parse(#""\u00e9\ud83d\ude00/\/""#)
        #expect(v.stringValue == "é😀//")
    }

    @Test(arguments: [
        "", " ", "{", "}", "[1,]", #"{"a":}"#, #"{"a" 1}"#, "tru", "nul", "01", "1.", "-", "1e", #""abc"#,
        "{\"a\":\"\u{01}\"}", #"{"a":1} x"#, #"[1 2]"#, #""\x""#, #""\u12G4""#,
    ])
    func invalidInputIsRejected(_ text: String) {
        #expect(throws: JSONParseError.self) { try JSON.parse(text) }
    }

    @Test func deepNestingIsRejectedNotCrashing() {
        let deep = String(repeating: "[", count: 10_000) + String(repeating: "]", count: 10_000)
        #expect(throws: JSONParseError.self) { try JSON.parse(deep) }
    }

    @Test func objectSubscriptReplacesInPlaceAndRemoves() {
        var o = JSONObject([("a", .int(1)), ("b", .int(2))])
        o["a"] = .string("x")
        o["c"] = .bool(true)
        #expect(o.keys == ["a", "b", "c"])
        o["b"] = nil
        #expect(o.keys == ["a", "c"])
        #expect(JSON.object(o).serialized() == #"{"a":"x","c":true}"#)
    }

    @Test func duplicateKeysLastWins() throws {
        let v = try JSON.parse(#"{"a":1,"a":2}"#)
        #expect(v["a"] == .number("2"))
    }

    @Test(arguments: [[UInt8](), [0], [1, 2], [1, 2, 3], Array("hello world".utf8), (0..<256).map { UInt8($0) }])
    func base64RoundTrips(_ bytes: [UInt8]) {
        #expect(Base64.decode(Base64.encode(bytes)) == bytes)
    }

    @Test func base64MatchesKnownVector() {
        let cfg = Array(#"{"cniVersion":"1.1.0","name":"net-a","plugins":[{"type":"rec"}]}"#.utf8)
        #expect(Base64.encode(cfg) == "eyJjbmlWZXJzaW9uIjoiMS4xLjAiLCJuYW1lIjoibmV0LWEiLCJwbHVnaW5zIjpbeyJ0eXBlIjoicmVjIn1dfQ==")
        #expect(Base64.decode("not base64!") == nil)
    }
}
