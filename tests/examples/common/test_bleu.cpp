// BLEU and chrF on cases worked out by hand (counts in the comments), the tokeniser, and errors.
#include <doctest/doctest.h>

#include <cmath>

#include "../../../examples/common/bleu.hpp"
#include "../../../examples/common/error.hpp"

using namespace unroll;

TEST_SUITE("examples/common/bleu") {
  TEST_CASE("tokens: punctuation split off, UTF-8 letters kept in words") {
    CHECK(examples::bleu_tokens("Dios, el  cielo.") == std::vector<std::string>{"Dios", ",", "el", "cielo", "."});
    CHECK(examples::bleu_tokens("crió á") == std::vector<std::string>{"crió", "á"});
    CHECK(examples::bleu_tokens("  ").empty());
  }

  TEST_CASE("BLEU: identical corpus is 100; a hand-counted case; brevity penalty; a missing order gives 0") {
    const auto same = examples::corpus_bleu({"the cat sat on the mat"}, {"the cat sat on the mat"});
    CHECK(same.score == doctest::Approx(100.0));
    CHECK(same.brevity_penalty == 1.0);
    // hyp "the cat sat on a mat" (6 tokens) vs ref "the cat sat on the mat":
    //   1-grams 5/6, 2-grams 3/5 (the cat, cat sat, sat on), 3-grams 2/4, 4-grams 1/3; BP 1
    const auto b = examples::corpus_bleu({"the cat sat on a mat"}, {"the cat sat on the mat"});
    CHECK(b.precisions[0] == doctest::Approx(5.0 / 6));
    CHECK(b.precisions[1] == doctest::Approx(3.0 / 5));
    CHECK(b.precisions[2] == doctest::Approx(2.0 / 4));
    CHECK(b.precisions[3] == doctest::Approx(1.0 / 3));
    CHECK(b.score == doctest::Approx(100 * std::pow(5.0 / 6 * 3.0 / 5 * 2.0 / 4 * 1.0 / 3, 0.25)));
    // clipping: "the the the the" against "the cat": 1-gram precision 1/4, no 2-gram match -> 0
    const auto clip = examples::corpus_bleu({"the the the the"}, {"the cat"});
    CHECK(clip.precisions[0] == doctest::Approx(0.25));
    CHECK(clip.score == 0.0);
    // a short hypothesis: 4 of the reference's 6 tokens, all n-grams match -> BP exp(1 - 6/4)
    const auto shorter = examples::corpus_bleu({"the cat sat on"}, {"the cat sat on the mat"});
    CHECK(shorter.brevity_penalty == doctest::Approx(std::exp(1 - 6.0 / 4)));
    CHECK(shorter.score == doctest::Approx(100 * std::exp(1 - 6.0 / 4)));
    // counts are summed over the corpus before the precisions are taken
    const auto corpus = examples::corpus_bleu({"a b c d", "x y"}, {"a b c d", "x z"});
    CHECK(corpus.precisions[0] == doctest::Approx(5.0 / 6));
    CHECK(corpus.precisions[1] == doctest::Approx(3.0 / 4));
  }

  TEST_CASE("chrF: identical is 100, disjoint is 0, a hand-counted case") {
    CHECK(examples::corpus_chrf({"abc d"}, {"abcd"}) == doctest::Approx(100.0));  // whitespace removed
    CHECK(examples::corpus_chrf({"xyz"}, {"abc"}) == 0.0);
    // hyp "ab" vs ref "abc": order 1 P 2/2 R 2/3; order 2 P 1/1 R 1/2; order 3: hyp has none (skipped).
    // P = 1, R = 7/12 averaged, F2 = 5 P R / (4 P + R) = 35/55 (sacrebleu: 63.64)
    CHECK(examples::corpus_chrf({"ab"}, {"abc"}) == doctest::Approx(100 * 35.0 / 55.0));
    // UTF-8: "é" is one character
    CHECK(examples::corpus_chrf({"é"}, {"é"}) == doctest::Approx(100.0));
  }

  TEST_CASE("utf8_length: well-formed characters, and 1 for bytes that do not start one") {
    CHECK(examples::utf8_length("a", 0) == 1);
    CHECK(examples::utf8_length("\xc3\xb1", 0) == 2);          // ñ
    CHECK(examples::utf8_length("\xe2\x82\xac", 0) == 3);      // €
    CHECK(examples::utf8_length("\xf0\x9f\x98\x80", 0) == 4);  // 😀
    CHECK(examples::utf8_length("\xf1" "ab", 0) == 1);              // Latin-1 ñ followed by ASCII
    CHECK(examples::utf8_length("\xc3", 0) == 1);                // truncated
    CHECK(examples::utf8_length("\x80", 0) == 1);                // stray continuation byte
  }

  TEST_CASE("errors") {
    CHECK_THROWS_AS(examples::corpus_bleu({}, {}), ValueError);
    CHECK_THROWS_WITH_AS(examples::corpus_chrf({"a"}, {"a", "b"}), doctest::Contains("1 hypotheses and 2 references"),
                         ValueError);
  }
}
