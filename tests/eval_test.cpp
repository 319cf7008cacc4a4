// The evaluation library (jobs/eval/): metrics against hand-computed values, the CSV parser, prompt
// truncation, and each benchmark runner on a tiny fixture in its public format, scored with a
// scripted model whose answers are known.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "data/tokenizer.h"
#include "jobs/eval/benchmarks.h"
#include "jobs/eval/csv.h"
#include "jobs/eval/language_model.h"
#include "jobs/eval/metrics.h"
#include "jobs/eval/prompt.h"
#include "jobs/job.h"
#include "tests/data_test_util.h"

namespace shc::jobs::eval {
namespace {

namespace fs = std::filesystem;
using data::test::TempDir;
using ::testing::HasSubstr;
using ::testing::StartsWith;

// A byte-level "model" that answers from a script. The question it is asked is what follows the
// prompt's last blank line (every shot ends in one); the first script key that question contains
// selects the answer.
class ScriptedModel : public LanguageModel {
 public:
  std::map<std::string, std::string> answers;  // key -> completion, or the letter for MMLU
  int64_t context = 1 << 20;
  std::vector<std::string> prompts;  // every prompt or prefix the model was given, decoded
  std::vector<std::string> stop;     // of the last greedy_generate
  int64_t max_new_tokens = 0;        // of the last greedy_generate

  std::vector<uint32_t> encode(const std::string& text) const override {
    return tokenizer_.encode(text);
  }
  std::string decode(const std::vector<uint32_t>& ids) const override {
    return tokenizer_.decode(ids);
  }
  int64_t context_length() const override { return context; }

  // Prefers the scripted letter only right after "Answer: ", the position MMLU is scored at;
  // anywhere else (a BOS token alone, the prompt before the space) every token is equally
  // likely, which a runner scoring the wrong position would read as 'A' every time.
  std::vector<double> next_token_logprobs(const std::vector<uint32_t>& prefix) override {
    const std::string text = decode(prefix);
    prompts.push_back(text);
    std::vector<double> logprobs(data::ByteTokenizer::kVocabSize,
                                 std::log(1.0 / data::ByteTokenizer::kVocabSize));
    const std::string cue = "Answer: ";
    if (text.size() >= cue.size() && text.compare(text.size() - cue.size(), cue.size(), cue) == 0) {
      std::fill(logprobs.begin(), logprobs.end(), std::log(0.5 / 256));
      logprobs[static_cast<unsigned char>(answer_for(text).at(0))] = std::log(0.5);
    }
    return logprobs;
  }

  // The scripted completion, cut at the first stop string as the interface promises.
  std::string greedy_generate(const std::vector<uint32_t>& prompt, int64_t max_new,
                              const std::vector<std::string>& stops) override {
    const std::string text = decode(prompt);
    prompts.push_back(text);
    stop = stops;
    max_new_tokens = max_new;
    const std::string completion = answer_for(text);
    size_t end = completion.size();
    for (const auto& s : stops) end = std::min(end, completion.find(s));
    return completion.substr(0, end);
  }

 private:
  std::string answer_for(const std::string& prompt) const {
    const size_t blank = prompt.rfind("\n\n");
    const std::string question = blank == std::string::npos ? prompt : prompt.substr(blank + 2);
    for (const auto& [key, answer] : answers) {
      if (question.find(key) != std::string::npos) return answer;
    }
    ADD_FAILURE() << "no scripted answer for the question: " << question;
    return "?";
  }

  data::ByteTokenizer tokenizer_;
};

void write(const fs::path& path, const std::string& content) {
  fs::create_directories(path.parent_path());
  data::test::write_file(path.string(), content);
}

// Runs `f`, which must throw ExitError(code) whose message is exactly `message`.
template <class F>
void expect_exit_error(F f, int code, const std::string& message) {
  try {
    f();
    ADD_FAILURE() << "no ExitError; expected: " << message;
  } catch (const ExitError& e) {
    EXPECT_EQ(e.code(), code);
    EXPECT_EQ(std::string(e.what()), message);
  }
}

// Same, for a message that starts with `prefix` (the rest is the JSON parser's own words).
template <class F>
void expect_exit_error_starting(F f, int code, const std::string& prefix) {
  try {
    f();
    ADD_FAILURE() << "no ExitError; expected: " << prefix << "...";
  } catch (const ExitError& e) {
    EXPECT_EQ(e.code(), code);
    EXPECT_THAT(std::string(e.what()), StartsWith(prefix));
  }
}

std::vector<ExampleResult> concat(std::vector<ExampleResult> a,
                                  const std::vector<ExampleResult>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

// --- metrics ------------------------------------------------------------------------------------

TEST(ExactMatch, TrimsAndCollapsesWhitespaceButKeepsCase) {
  EXPECT_EQ(normalize_answer("  The \t cat\n\nsat  "), "The cat sat");
  EXPECT_EQ(normalize_answer(" \n "), "");
  EXPECT_TRUE(exact_match(" (A)\n", "(A)"));
  EXPECT_TRUE(exact_match("apple   pear", "apple pear"));
  EXPECT_FALSE(exact_match("true", "True"));
  EXPECT_FALSE(exact_match("42.", "42"));
  EXPECT_TRUE(exact_match("", "  "));
}

TEST(TokenF1, BagOfWordsOverlap) {
  // 3 common words of 3 predicted and 4 reference: P = 1, R = 3/4, F1 = 2 * 3/4 / (7/4) = 6/7.
  const auto s = token_f1("the cat sat", " the  cat sat down");
  EXPECT_DOUBLE_EQ(s.precision, 1.0);
  EXPECT_DOUBLE_EQ(s.recall, 0.75);
  EXPECT_DOUBLE_EQ(s.f1, 6.0 / 7.0);
  // A repeated word counts as often as the reference has it: common = 1, P = 1/3, R = 1/2,
  // F1 = 2 * (1/6) / (5/6) = 2/5.
  const auto repeated = token_f1("a a a", "a b");
  EXPECT_DOUBLE_EQ(repeated.precision, 1.0 / 3.0);
  EXPECT_DOUBLE_EQ(repeated.recall, 0.5);
  EXPECT_DOUBLE_EQ(repeated.f1, 0.4);
  EXPECT_DOUBLE_EQ(token_f1("", " ").f1, 1.0);
  EXPECT_DOUBLE_EQ(token_f1("", "cat").f1, 0.0);
  EXPECT_DOUBLE_EQ(token_f1("dog", "cat").f1, 0.0);
  EXPECT_DOUBLE_EQ(token_f1("Cat", "cat").f1, 0.0);  // case-sensitive
}

TEST(CorpusBleu, PerfectMatchIsOne) {
  const auto s =
      corpus_bleu({"the cat sat on the mat", "a b c d"}, {"the cat sat on the mat", "a b c d"});
  EXPECT_DOUBLE_EQ(s.bleu, 1.0);
  EXPECT_DOUBLE_EQ(s.brevity_penalty, 1.0);
  EXPECT_EQ(s.hypothesis_length, 10);
  EXPECT_EQ(s.reference_length, 10);
}

TEST(CorpusBleu, ClippedPrecisionsSummedOverTheCorpusWithBrevityPenalty) {
  // Sentence 1: the hypothesis is the reference without "today": every n-gram matches,
  //   1..4-grams 6/6, 5/5, 4/4, 3/3.
  // Sentence 2: "a dog ran fast" against "a dog ran away quickly":
  //   1-grams a, dog, ran match, fast does not: 3/4; 2-grams "a dog", "dog ran": 2/3;
  //   3-grams "a dog ran": 1/2; 4-grams: 0/1.
  // Corpus: p1 = 9/10, p2 = 7/8, p3 = 5/6, p4 = 3/4 (sums over both sentences, not averages).
  // c = 6 + 4 = 10 <= r = 7 + 5 = 12, so BP = exp(1 - 12/10) = exp(-0.2).
  // BLEU = exp(-0.2) * (9/10 * 7/8 * 5/6 * 3/4)^(1/4) = 0.68576252518891...
  const auto s = corpus_bleu({"the cat sat on the mat", "a dog ran fast"},
                             {"the cat sat on the mat today", "a dog ran away quickly"});
  EXPECT_EQ(s.matches, (std::array<int64_t, 4>{9, 7, 5, 3}));
  EXPECT_EQ(s.totals, (std::array<int64_t, 4>{10, 8, 6, 4}));
  EXPECT_DOUBLE_EQ(s.precisions[1], 7.0 / 8.0);
  EXPECT_EQ(s.hypothesis_length, 10);
  EXPECT_EQ(s.reference_length, 12);
  EXPECT_DOUBLE_EQ(s.brevity_penalty, std::exp(-0.2));
  EXPECT_NEAR(s.bleu, std::exp(-0.2) * std::pow(0.9 * 0.875 * (5.0 / 6.0) * 0.75, 0.25), 1e-15);
  EXPECT_NEAR(s.bleu, 0.6857625251889176, 1e-12);
  // A hypothesis longer than its reference has no penalty: c = 7 > r = 6.
  EXPECT_DOUBLE_EQ(
      corpus_bleu({"the cat sat on the mat today"}, {"the cat sat on the mat"}).brevity_penalty,
      1.0);
}

TEST(CorpusBleu, AZeroPrecisionGivesZero) {
  // Clipping: "the" counts once, as in the reference, so p1 = 1/4; no bigram matches: p2 = 0.
  const auto clipped = corpus_bleu({"the the the the"}, {"the cat"});
  EXPECT_EQ(clipped.matches[0], 1);
  EXPECT_EQ(clipped.totals[0], 4);
  EXPECT_DOUBLE_EQ(clipped.precisions[0], 0.25);
  EXPECT_DOUBLE_EQ(clipped.bleu, 0.0);
  // A perfect but 2-word hypothesis has no 3- or 4-grams: p3 = p4 = 0, so BLEU 0 (no smoothing).
  const auto short_one = corpus_bleu({"the cat"}, {"the cat"});
  EXPECT_EQ(short_one.totals[3], 0);
  EXPECT_DOUBLE_EQ(short_one.bleu, 0.0);
  EXPECT_DOUBLE_EQ(corpus_bleu({}, {}).bleu, 0.0);
  EXPECT_THROW(corpus_bleu({"a"}, {}), std::invalid_argument);
}

TEST(Perplexity, IsExpOfTheMeanNll) {
  EXPECT_NEAR(perplexity(3 * std::log(4.0), 3), 4.0, 1e-12);
  EXPECT_DOUBLE_EQ(perplexity(0, 5), 1.0);
  EXPECT_THROW(perplexity(1.0, 0), std::invalid_argument);
  EXPECT_DOUBLE_EQ(token_accuracy(3, 4), 0.75);
  EXPECT_THROW(token_accuracy(5, 4), std::invalid_argument);
  EXPECT_THROW(token_accuracy(0, 0), std::invalid_argument);
}

// --- CSV ----------------------------------------------------------------------------------------

TEST(Csv, PlainAndQuotedFields) {
  EXPECT_EQ(parse_csv("a,b\nc,d"), (std::vector<CsvRecord>{{"a", "b"}, {"c", "d"}}));
  EXPECT_EQ(parse_csv("a,b\r\nc,d\r\n"), (std::vector<CsvRecord>{{"a", "b"}, {"c", "d"}}));
  EXPECT_EQ(parse_csv(""), std::vector<CsvRecord>{});
  // Commas, doubled quotes, LF and CRLF inside quotes; empty fields quoted or not.
  EXPECT_EQ(parse_csv("\"x, y\",\"say \"\"hi\"\"\",\"two\nlines\",\"crlf\r\nkept\"\n,\"\",z,\n"),
            (std::vector<CsvRecord>{{"x, y", "say \"hi\"", "two\nlines", "crlf\r\nkept"},
                                    {"", "", "z", ""}}));
  EXPECT_EQ(parse_csv("\"\"\"\"\n"), (std::vector<CsvRecord>{{"\""}}));
  EXPECT_EQ(parse_csv("a\n\nb\n"), (std::vector<CsvRecord>{{"a"}, {""}, {"b"}}));
  EXPECT_EQ(parse_csv("cr\rinside,x"), (std::vector<CsvRecord>{{"cr\rinside", "x"}}));
}

TEST(Csv, MalformedInputNamesTheLine) {
  const auto message = [](const std::string& text) {
    try {
      parse_csv(text);
    } catch (const std::invalid_argument& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_EQ(message("a,b\n\"open\nstill open,x\n"),
            "CSV line 2: quoted field not closed before the end of the file");
  EXPECT_EQ(message("a,b\nc,d\"e\n"), "CSV line 2: '\"' inside an unquoted field");
  EXPECT_EQ(message("\"two\nlines\"x,y\n"),
            "CSV line 2: unexpected character after a closing quote");
}

// --- prompt truncation --------------------------------------------------------------------------

TEST(Prompt, CutFromTheLeftDroppingShotsThenTheHeaderThenTheQuestionsStart) {
  data::ByteTokenizer bytes;
  const PromptEncoder encode = [&](const std::string& t) { return bytes.encode(t); };
  const FewShotPrompt p{"H:\n", {"shot one\n", "shot 2\n"}, "question?"};
  EXPECT_EQ(prompt_text(p), "H:\nshot one\nshot 2\nquestion?");
  const int64_t full = 3 + 9 + 7 + 9;

  auto f = fit_prompt(p, full, encode);
  EXPECT_EQ(f.text, prompt_text(p));
  EXPECT_EQ(f.shots_kept, 2);
  EXPECT_FALSE(f.truncated);

  f = fit_prompt(p, full - 1, encode);  // the first shot goes, whole
  EXPECT_EQ(f.text, "H:\nshot 2\nquestion?");
  EXPECT_EQ(f.shots_kept, 1);
  EXPECT_TRUE(f.header_kept);
  EXPECT_TRUE(f.truncated);

  f = fit_prompt(p, 3 + 9, encode);  // no shot fits; the header still does
  EXPECT_EQ(f.text, "H:\nquestion?");
  EXPECT_EQ(f.shots_kept, 0);
  EXPECT_TRUE(f.header_kept);

  f = fit_prompt(p, 11, encode);  // then the header goes
  EXPECT_EQ(f.text, "question?");
  EXPECT_FALSE(f.header_kept);
  EXPECT_EQ(f.question_tokens_cut, 0);

  f = fit_prompt(p, 4, encode);  // and the question keeps its last 4 tokens
  EXPECT_EQ(bytes.decode(f.tokens), "ion?");
  EXPECT_EQ(f.question_tokens_cut, 5);
  EXPECT_TRUE(f.truncated);

  EXPECT_THROW(fit_prompt(p, 0, encode), std::invalid_argument);
}

// --- MMLU ---------------------------------------------------------------------------------------

// Two subjects: abstract_algebra (3 questions: C, D, B; 2 dev rows) and anatomy (1 question: B;
// 1 dev row). The model answers C, D, C and B: 2/3 and 1/1.
void write_mmlu(const fs::path& dir) {
  write(dir / "mmlu/dev/abstract_algebra_dev.csv",
        "\"Find the degree of Q(sqrt(2)) over Q, \"\"exactly\"\".\",0,2,4,6,B\n"
        "What is 2+2?,3,4,5,6,B\n");
  write(dir / "mmlu/test/abstract_algebra_test.csv",
        "\"Which set is a group,\nunder addition?\",N,\"{0, 1}\",Z,none,C\n"
        "Order of the trivial group?,2,3,4,1,D\n"
        "Is Z_4 cyclic?,No,Yes,Only Z_2,Never,B\n");
  write(dir / "mmlu/dev/anatomy_dev.csv",
        "Which bone is in the arm?,femur,humerus,tibia,fibula,B\n");
  write(dir / "mmlu/test/anatomy_test.csv",
        "Which organ pumps blood?,lung,heart,liver,kidney,B\r\n");
}

ScriptedModel mmlu_model() {
  ScriptedModel m;
  m.answers = {{"a group", "C"}, {"trivial group", "D"}, {"Z_4 cyclic", "C"}, {"kidney", "B"}};
  return m;
}

TEST(Mmlu, ScoresEachAnswerLettersTokenAtThePositionAfterThePrompt) {
  TempDir tmp;
  write_mmlu(tmp.path());
  auto model = mmlu_model();
  const auto results = run_mmlu(model, tmp.path().string());
  ASSERT_EQ(results.size(), 4u);
  EXPECT_EQ(results[0].task, "abstract_algebra");
  EXPECT_EQ(results[0].prediction, "C");
  EXPECT_TRUE(results[0].correct);
  EXPECT_EQ(results[2].prediction, "C");
  EXPECT_EQ(results[2].reference, "B");
  EXPECT_FALSE(results[2].correct);
  EXPECT_EQ(results[0].shots, 2);  // as many dev rows as exist, up to 5
  EXPECT_FALSE(results[0].truncated);

  // The byte tokenizer encodes " A" as ' ', 'A': the model reads the prompt and the space and is
  // scored on the letter's byte - not on a BOS token or the prompt without the space.
  EXPECT_EQ(model.prompts.back(),
            "The following are multiple choice questions (with answers) about anatomy.\n\n"
            "Which bone is in the arm?\nA. femur\nB. humerus\nC. tibia\nD. fibula\nAnswer: B\n\n"
            "Which organ pumps blood?\nA. lung\nB. heart\nC. liver\nD. kidney\nAnswer: ");
  EXPECT_THAT(model.prompts.front(),
              StartsWith("The following are multiple choice questions (with answers) about "
                         "abstract algebra.\n\nFind the degree of Q(sqrt(2)) over Q, \"exactly\"."
                         "\nA. 0\nB. 2\nC. 4\nD. 6\nAnswer: B\n\nWhat is 2+2?"));
  EXPECT_THAT(model.prompts.front(),
              HasSubstr("\n\nWhich set is a group,\nunder addition?\nA. N\nB. {0, 1}\nC. Z\n"));

  const auto summary = summarize(results, kMmluMetric);
  EXPECT_DOUBLE_EQ(summary["tasks"]["abstract_algebra"]["accuracy"].get<double>(), 2.0 / 3.0);
  EXPECT_EQ(summary["tasks"]["abstract_algebra"]["n"], 3);
  EXPECT_DOUBLE_EQ(summary["tasks"]["anatomy"]["accuracy"].get<double>(), 1.0);
  EXPECT_DOUBLE_EQ(summary["overall"]["accuracy"].get<double>(), 0.75);  // micro: 3 of 4
  EXPECT_DOUBLE_EQ(summary["overall"]["macro_accuracy"].get<double>(), (2.0 / 3.0 + 1.0) / 2);
  EXPECT_EQ(summary["overall"]["n"], 4);
  EXPECT_EQ(summary["overall"]["tasks"], 2);

  auto zero_shot = mmlu_model();
  MmluOptions options;
  options.shots = 0;
  const auto zero = run_mmlu(zero_shot, tmp.path().string(), options);
  EXPECT_EQ(zero[3].shots, 0);
  EXPECT_EQ(zero_shot.prompts.back(),
            "The following are multiple choice questions (with answers) about anatomy.\n\n"
            "Which organ pumps blood?\nA. lung\nB. heart\nC. liver\nD. kidney\nAnswer: ");
}

TEST(Mmlu, ShardsTogetherEqualOneProcess) {
  TempDir tmp;
  write_mmlu(tmp.path());
  auto model = mmlu_model();
  const auto one = run_mmlu(model, tmp.path().string());
  MmluOptions rank0, rank1;
  rank0.shard = {0, 2};
  rank1.shard = {1, 2};
  const auto r0 = run_mmlu(model, tmp.path().string(), rank0);
  const auto r1 = run_mmlu(model, tmp.path().string(), rank1);
  // The index runs over the whole benchmark: algebra 0, 1, 2, anatomy 3.
  ASSERT_EQ(r0.size(), 2u);
  EXPECT_EQ(r0[1].example, 2);
  ASSERT_EQ(r1.size(), 2u);
  EXPECT_EQ(r1[1].task, "anatomy");
  // Gathered as JSON, in any order.
  const auto gathered = nlohmann::json(concat(r1, r0)).get<std::vector<ExampleResult>>();
  EXPECT_EQ(summarize(gathered, kMmluMetric), summarize(one, kMmluMetric));
  EXPECT_THROW(summarize(concat(one, r0), kMmluMetric), std::invalid_argument);
  MmluOptions bad;
  bad.shard = {2, 2};
  EXPECT_THROW(run_mmlu(model, tmp.path().string(), bad), std::invalid_argument);
}

TEST(Mmlu, AQuestionLongerThanTheContextLosesItsBeginning) {
  TempDir tmp;
  write_mmlu(tmp.path());
  fs::remove(tmp.path() / "mmlu/test/abstract_algebra_test.csv");
  auto model = mmlu_model();
  model.context = 40;  // 39 prompt tokens + the letter
  const auto results = run_mmlu(model, tmp.path().string());
  ASSERT_EQ(results.size(), 1u);
  const std::string question =
      "Which organ pumps blood?\nA. lung\nB. heart\nC. liver\nD. kidney\nAnswer: ";
  EXPECT_EQ(model.prompts.back(), question.substr(question.size() - 39));
  EXPECT_EQ(results[0].shots, 0);
  EXPECT_TRUE(results[0].truncated);
  EXPECT_TRUE(results[0].correct);
}

TEST(Mmlu, MissingFilesAndMalformedRowsAreDataErrorsNamingTheFile) {
  TempDir tmp;
  auto model = mmlu_model();
  const std::string dir = tmp.path().string();
  expect_exit_error([&] { run_mmlu(model, dir); }, kExitData,
                    "MMLU: directory '" + dir + "/mmlu/test' does not exist");
  write_mmlu(tmp.path());
  fs::remove(tmp.path() / "mmlu/dev/anatomy_dev.csv");
  expect_exit_error(
      [&] { run_mmlu(model, dir); }, kExitData,
      "MMLU: cannot read '" + dir + "/mmlu/dev/anatomy_dev.csv': No such file or directory");
  write_mmlu(tmp.path());
  const std::string test = dir + "/mmlu/test/anatomy_test.csv";
  write(test, "q,a,b,c,d,A\nq2,a,\"b,c\",d,B\n");
  expect_exit_error(
      [&] { run_mmlu(model, dir); }, kExitData,
      "MMLU file '" + test + "': record 2 has 5 columns; expected 6 (question,A,B,C,D,answer)");
  write(test, "q,a,b,c,d,E\n");
  expect_exit_error([&] { run_mmlu(model, dir); }, kExitData,
                    "MMLU file '" + test + "': record 1: answer 'E' is not one of A, B, C, D");
  write(test, "q,a,b,c,d,\"A\n");
  expect_exit_error(
      [&] { run_mmlu(model, dir); }, kExitData,
      "MMLU file '" + test + "': CSV line 1: quoted field not closed before the end of the file");
  write(test, "");
  expect_exit_error([&] { run_mmlu(model, dir); }, kExitData,
                    "MMLU file '" + test + "': no questions");
}

// --- GSM8K --------------------------------------------------------------------------------------

const char* const kGsm8kTrain =
    "{\"question\": \"Tom has 1 apple and buys 2 more. How many?\", "
    "\"answer\": \"1 + 2 = <<1+2=3>>3\\n#### 3\"}\n"
    "{\"question\": \"Ann has 10 pens and loses 4. How many?\", \"answer\": \"10 - 4 = 6\\n#### "
    "6\"}\n";
const char* const kGsm8kTest =
    "{\"question\": \"Sam has 3 cats and gets 4 more. How many cats?\", "
    "\"answer\": \"3 + 4 = 7\\n#### 7\"}\n"
    "{\"question\": \"A car costs 500 and a bike 500. Total?\", "
    "\"answer\": \"500 + 500 = 1000\\n#### 1,000\"}\n"
    "{\"question\": \"Joe eats 2 of 8 pies. How many are left?\", \"answer\": \"8 - 2 = 6\\n#### "
    "6\"}\n"
    "\n";

// Right, right (after the stop string and with commas), wrong.
ScriptedModel gsm8k_model() {
  ScriptedModel m;
  m.answers = {{"cats", " 3 + 4 = 7\n#### 7\n\nQuestion: Bob has 99 cats"},
               {"Total", " The total is $1,000.00"},
               {"pies", " 8 - 2 = 5\n#### 5"}};
  return m;
}

TEST(Gsm8k, FinalNumberExtraction) {
  EXPECT_EQ(gsm8k_final_number("3 + 4 = 7\n#### 7"), "7");
  EXPECT_EQ(gsm8k_final_number("It costs $1,234.50 in total."), "1234.5");
  EXPECT_EQ(gsm8k_final_number("from 10 down to -3."), "-3");
  EXPECT_EQ(gsm8k_final_number("007 agents, 2.0 each"), "2");
  EXPECT_EQ(gsm8k_final_number("no number here"), "");
  EXPECT_EQ(gsm8k_number(" 1,000 "), "1000");
  EXPECT_EQ(gsm8k_number("+0.50"), "0.5");
  EXPECT_EQ(gsm8k_number("-0"), "0");
  EXPECT_EQ(gsm8k_number("$5"), "");
  EXPECT_EQ(gsm8k_number("5 apples"), "");
}

TEST(Gsm8k, ShotsFromTheTrainFileAndTheFinalNumberScored) {
  TempDir tmp;
  write(tmp.path() / "gsm8k/train.jsonl", kGsm8kTrain);
  write(tmp.path() / "gsm8k/test.jsonl", kGsm8kTest);
  auto model = gsm8k_model();
  Gsm8kOptions options;
  options.shots = 2;
  const auto results = run_gsm8k(model, tmp.path().string(), options);
  ASSERT_EQ(results.size(), 3u);  // train.jsonl gives the shots and is not scored
  EXPECT_EQ(model.prompts[0],
            "Question: Tom has 1 apple and buys 2 more. How many?\n"
            "Answer: 1 + 2 = <<1+2=3>>3\n#### 3\n\n"
            "Question: Ann has 10 pens and loses 4. How many?\nAnswer: 10 - 4 = 6\n#### 6\n\n"
            "Question: Sam has 3 cats and gets 4 more. How many cats?\nAnswer:");
  EXPECT_EQ(model.stop, (std::vector<std::string>{"\n\n", "Question:"}));
  EXPECT_EQ(model.max_new_tokens, 256);
  EXPECT_EQ(results[0].prediction, "7");
  EXPECT_TRUE(results[0].correct);
  EXPECT_EQ(results[1].prediction, "1000");
  EXPECT_EQ(results[1].reference, "1000");
  EXPECT_TRUE(results[1].correct);
  EXPECT_EQ(results[2].prediction, "5");
  EXPECT_FALSE(results[2].correct);
  EXPECT_EQ(results[2].shots, 2);
  const auto summary = summarize(results, kGsm8kMetric);
  EXPECT_DOUBLE_EQ(summary["tasks"]["test"]["exact_match"].get<double>(), 2.0 / 3.0);
  EXPECT_DOUBLE_EQ(summary["overall"]["exact_match"].get<double>(), 2.0 / 3.0);
}

TEST(Gsm8k, WithoutATrainFileTheFirstKExamplesAreShotsAndNotScored) {
  TempDir tmp;
  write(tmp.path() / "gsm8k/test.jsonl", kGsm8kTest);
  auto model = gsm8k_model();
  Gsm8kOptions options;
  options.shots = 1;
  const auto results = run_gsm8k(model, tmp.path().string(), options);
  ASSERT_EQ(results.size(), 2u);
  EXPECT_EQ(results[0].example, 1);
  EXPECT_EQ(results[1].example, 2);
  EXPECT_THAT(model.prompts[0],
              StartsWith("Question: Sam has 3 cats and gets 4 more. How many cats?\n"
                         "Answer: 3 + 4 = 7\n#### 7\n\nQuestion: A car costs"));
  EXPECT_DOUBLE_EQ(summarize(results, kGsm8kMetric)["overall"]["exact_match"].get<double>(), 0.5);
  options.shots = 3;
  expect_exit_error([&] { run_gsm8k(model, tmp.path().string(), options); }, kExitData,
                    "GSM8K file '" + (tmp.path() / "gsm8k/test.jsonl").string() +
                        "': 3 problems, all taken as shots (there is no train.jsonl): none is "
                        "left to score");
}

TEST(Gsm8k, DropsWholeShotsToFitTheContext) {
  TempDir tmp;
  write(tmp.path() / "gsm8k/train.jsonl", kGsm8kTrain);
  write(tmp.path() / "gsm8k/test.jsonl", kGsm8kTest);
  auto model = gsm8k_model();
  const std::string second_shot =
      "Question: Ann has 10 pens and loses 4. How many?\nAnswer: 10 - 4 = 6\n#### 6\n\n";
  const std::string question = "Question: Sam has 3 cats and gets 4 more. How many cats?\nAnswer:";
  Gsm8kOptions options;
  options.shots = 2;
  options.max_new_tokens = 10;
  model.context = static_cast<int64_t>(second_shot.size() + question.size()) + 10;
  const auto results = run_gsm8k(model, tmp.path().string(), options);
  EXPECT_EQ(model.prompts[0], second_shot + question);
  EXPECT_EQ(results[0].shots, 1);
  EXPECT_TRUE(results[0].truncated);
  EXPECT_EQ(summarize(results, kGsm8kMetric)["overall"]["truncated"], 3);
  // No room left for a prompt is a usage error.
  options.max_new_tokens = model.context;
  expect_exit_error([&] { run_gsm8k(model, tmp.path().string(), options); }, kExitUsage,
                    "GSM8K: max_new_tokens " + std::to_string(model.context) +
                        " must be at least 1 and leave room for a prompt in the model's context "
                        "of " +
                        std::to_string(model.context) + " tokens");
}

TEST(Gsm8k, MissingDirectoryAndMalformedLinesNameTheFile) {
  TempDir tmp;
  auto model = gsm8k_model();
  const std::string dir = tmp.path().string();
  expect_exit_error([&] { run_gsm8k(model, dir); }, kExitData,
                    "GSM8K: directory '" + dir + "/gsm8k' does not exist");
  fs::create_directories(tmp.path() / "gsm8k");
  expect_exit_error([&] { run_gsm8k(model, dir); }, kExitData,
                    "GSM8K: no *.jsonl files in '" + dir + "/gsm8k'");
  const std::string test = dir + "/gsm8k/test.jsonl";
  write(test,
        "{\"question\": \"q\", \"answer\": \"1\\n#### 1\"}\n{\"question\": \"q\", \"answer\": "
        "\"2\"}\n");
  expect_exit_error([&] { run_gsm8k(model, dir); }, kExitData,
                    "GSM8K file '" + test + "': line 2: answer has no \"####\"");
  write(test, "{\"question\": \"q\", \"answer\": \"#### two\"}\n");
  expect_exit_error([&] { run_gsm8k(model, dir); }, kExitData,
                    "GSM8K file '" + test + "': line 1: \"two\" after \"####\" is not a number");
  write(test, "{\"question\": \"q\"}\n");
  expect_exit_error(
      [&] { run_gsm8k(model, dir); }, kExitData,
      "GSM8K file '" + test + "': line 1: expected {\"question\": string, \"answer\": string}");
  write(test, "\n{\"question\": \"q\", \"answer\": \n");
  expect_exit_error_starting([&] { run_gsm8k(model, dir); }, kExitData,
                             "GSM8K file '" + test + "': line 2: ");
}

// --- BBH ----------------------------------------------------------------------------------------

void write_bbh(const fs::path& dir) {
  write(dir / "bbh/boolean_expressions.json", R"({"canary": "not for training", "examples": [
    {"input": "not ( True ) and ( True ) is", "target": "False"},
    {"input": "True and False is", "target": "False"},
    {"input": "True or False is", "target": "True"},
    {"input": "not True is", "target": "False"}]})");
  write(dir / "bbh/word_sorting.json", R"({"examples": [
    {"input": "Sort: b a", "target": "a b"},
    {"input": "Sort: pear apple", "target": "apple pear"}]})");
}

// Right (the rest of the line's text is cut at the stop), right, wrong; right after
// normalisation.
ScriptedModel bbh_model() {
  ScriptedModel m;
  m.answers = {{"True and False is", " False\nQ: True or True is\nA: True"},
               {"True or False is", " True"},
               {"not True is", " True"},
               {"pear apple", "  apple   pear "}};
  return m;
}

TEST(Bbh, ExactMatchOfTheGeneratedLine) {
  TempDir tmp;
  write_bbh(tmp.path());
  auto model = bbh_model();
  BbhOptions options;
  options.shots = 1;
  const auto results = run_bbh(model, tmp.path().string(), options);
  ASSERT_EQ(results.size(), 4u);  // the first example of each task is its shot
  EXPECT_EQ(model.prompts[0],
            "Q: not ( True ) and ( True ) is\nA: False\n\nQ: True and False is\nA:");
  EXPECT_EQ(model.stop, std::vector<std::string>{"\n"});
  EXPECT_EQ(results[0].example, 1);
  EXPECT_EQ(results[0].prediction, "False");
  EXPECT_TRUE(results[0].correct);
  EXPECT_FALSE(results[2].correct);
  EXPECT_EQ(results[3].prediction, "apple pear");
  EXPECT_TRUE(results[3].correct);
  const auto summary = summarize(results, kBbhMetric);
  EXPECT_DOUBLE_EQ(summary["tasks"]["boolean_expressions"]["exact_match"].get<double>(), 2.0 / 3.0);
  EXPECT_EQ(summary["tasks"]["boolean_expressions"]["n"], 3);
  EXPECT_DOUBLE_EQ(summary["tasks"]["word_sorting"]["exact_match"].get<double>(), 1.0);
  EXPECT_DOUBLE_EQ(summary["overall"]["exact_match"].get<double>(), 0.75);
  EXPECT_DOUBLE_EQ(summary["overall"]["macro_exact_match"].get<double>(), (2.0 / 3.0 + 1.0) / 2);
  EXPECT_EQ(summary["overall"]["truncated"], 0);
}

TEST(Bbh, MissingDirectoryAndMalformedFilesNameTheFile) {
  TempDir tmp;
  auto model = bbh_model();
  const std::string dir = tmp.path().string();
  expect_exit_error([&] { run_bbh(model, dir); }, kExitData,
                    "BBH: directory '" + dir + "/bbh' does not exist");
  write_bbh(tmp.path());
  const std::string file = dir + "/bbh/word_sorting.json";
  write(file, "{\"examples\": [");
  expect_exit_error_starting([&] { run_bbh(model, dir); }, kExitData, "BBH file '" + file + "': ");
  write(file, R"({"examples": [{"input": "Sort: b a", "target": "a b"}, {"input": "x"}]})");
  expect_exit_error(
      [&] { run_bbh(model, dir); }, kExitData,
      "BBH file '" + file + "': examples[1]: expected {\"input\": string, \"target\": string}");
  write(file, R"({"data": []})");
  expect_exit_error([&] { run_bbh(model, dir); }, kExitData,
                    "BBH file '" + file + "': expected an object with an \"examples\" array");
  write(file, R"({"examples": [{"input": "Sort: b a", "target": "a b"}]})");
  BbhOptions options;
  options.shots = 1;
  expect_exit_error(
      [&] { run_bbh(model, dir, options); }, kExitData,
      "BBH file '" + file + "': 1 examples; with the first 1 taken as shots none is left to score");
}

// --- summaries ----------------------------------------------------------------------------------

TEST(Summarize, OverallIsTheMicroAverageWithTheMacroBeside) {
  std::vector<ExampleResult> results;
  for (int i = 0; i < 4; ++i) results.push_back({"big", i, i < 3, 5, i == 0, "", ""});
  results.push_back({"small", 0, false, 5, false, "", ""});
  const auto s = summarize(results, "accuracy");
  EXPECT_DOUBLE_EQ(s["tasks"]["big"]["accuracy"].get<double>(), 0.75);
  EXPECT_EQ(s["tasks"]["big"]["truncated"], 1);
  EXPECT_DOUBLE_EQ(s["overall"]["accuracy"].get<double>(), 3.0 / 5.0);
  EXPECT_DOUBLE_EQ(s["overall"]["macro_accuracy"].get<double>(), (0.75 + 0.0) / 2);
  EXPECT_EQ(s["overall"]["correct"], 3);
  EXPECT_THROW(summarize({}, "accuracy"), std::invalid_argument);
}

}  // namespace
}  // namespace shc::jobs::eval
