// Tests of the `shc` command line (launch/cli.cpp) through run_cli, with test-only jobs that
// record what they were given.
#include <gtest/gtest.h>

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

#include "core/config.h"
#include "jobs/job.h"
#include "jobs/model_options.h"
#include "launch/cli.h"

namespace {

namespace po = boost::program_options;

// What the last run of a test job saw.
struct Seen {
  bool ran = false;
  int value = 0;
  bool flag = false;
  shc::ModelConfig model;
  std::string path;
};
Seen g_seen;

class EchoJob : public shc::jobs::Job {
 public:
  void add_options(po::options_description& options) const override {
    options.add_options()                                                 //
        ("echo.value", po::value<int>()->default_value(0), "an int")      //
        ("echo.flag", po::value<bool>()->default_value(false), "a bool")  //
        ("echo.exit_code", po::value<int>()->default_value(0), "throw ExitError with this code");
  }
  int run(const po::variables_map& vm) override {
    g_seen.ran = true;
    g_seen.value = vm["echo.value"].as<int>();
    g_seen.flag = vm["echo.flag"].as<bool>();
    const int code = vm["echo.exit_code"].as<int>();
    if (code != 0) throw shc::jobs::ExitError(code, "echo was asked to fail");
    return shc::jobs::kExitOk;
  }
};
SHC_REGISTER_JOB(EchoJob, "echo", "test job that records its options");

// A job with a bare argument, like `shc inspect PATH`.
class EchoPathJob : public shc::jobs::Job {
 public:
  void add_options(po::options_description& options) const override {
    options.add_options()("path", po::value<std::string>()->required(), "a path");
  }
  void add_positional(po::positional_options_description& positional) const override {
    positional.add("path", 1);
  }
  int run(const po::variables_map& vm) override {
    g_seen.ran = true;
    g_seen.path = vm["path"].as<std::string>();
    return shc::jobs::kExitOk;
  }
};
SHC_REGISTER_JOB(EchoPathJob, "echo_path", "test job with a bare argument");

class EchoModelJob : public shc::jobs::Job {
 public:
  void add_options(po::options_description& options) const override {
    shc::jobs::add_model_options(options);
  }
  int run(const po::variables_map& vm) override {
    g_seen.ran = true;
    g_seen.model = shc::jobs::model_config_from(vm);
    return shc::jobs::kExitOk;
  }
};
SHC_REGISTER_JOB(EchoModelJob, "echo-model", "test job that builds a ModelConfig");

class CliTest : public ::testing::Test {
 protected:
  void SetUp() override {
    g_seen = Seen{};
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = std::filesystem::temp_directory_path() /
           ("shc_cli_test_" + std::to_string(::getpid()) + "_" + info->name());
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  int cli(const std::vector<std::string>& args) {
    std::vector<const char*> argv = {"shc"};
    for (const auto& a : args) argv.push_back(a.c_str());
    std::ostringstream out, err;
    const int code = shc::launch::run_cli(static_cast<int>(argv.size()), argv.data(), out, err);
    out_ = out.str();
    err_ = err.str();
    return code;
  }

  std::string write(const std::string& name, const std::string& text) {
    const auto path = (dir_ / name).string();
    std::ofstream(path) << text;
    return path;
  }

  std::filesystem::path dir_;
  std::string out_, err_;
};

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

TEST_F(CliTest, NoArgumentsIsAUsageError) {
  EXPECT_EQ(cli({}), 2);
  EXPECT_TRUE(contains(err_, "usage: shc <job> [--config FILE.ini]... [--section.key value]..."))
      << err_;
  EXPECT_TRUE(contains(err_, "echo")) << err_;
}

TEST_F(CliTest, HelpListsRegisteredJobsWithSummaries) {
  for (const char* flag : {"--help", "-h"}) {
    EXPECT_EQ(cli({flag}), 0);
    EXPECT_TRUE(contains(out_, "usage: shc <job>")) << out_;
    // Names are padded to the longest one linked in, so the gap depends on the other jobs.
    EXPECT_TRUE(
        std::regex_search(out_, std::regex("\n  echo-model +test job that builds a ModelConfig\n")))
        << out_;
    for (const auto* job : shc::jobs::JobRegistry::instance().list()) {
      EXPECT_TRUE(contains(out_, job->name)) << job->name;
    }
  }
}

TEST_F(CliTest, VersionPrintsTheProjectVersion) {
  EXPECT_EQ(cli({"--version"}), 0);
  EXPECT_EQ(out_.rfind("shc ", 0), 0u) << out_;
}

TEST_F(CliTest, UnknownJobSuggestsTheClosestJob) {
  EXPECT_EQ(cli({"ehco"}), 2);
  EXPECT_TRUE(contains(err_, "shc: unknown job 'ehco' (did you mean 'echo'?)")) << err_;
  EXPECT_EQ(cli({"zzzzzzzz"}), 2);
  EXPECT_TRUE(contains(err_, "shc: unknown job 'zzzzzzzz'")) << err_;
  EXPECT_FALSE(contains(err_, "did you mean")) << err_;
}

TEST_F(CliTest, OptionBeforeTheJobIsAUsageError) {
  EXPECT_EQ(cli({"--echo.value", "3"}), 2);
  EXPECT_TRUE(contains(err_, "expected a job name")) << err_;
}

TEST_F(CliTest, JobHelpListsItsOwnAndTheCommonOptions) {
  EXPECT_EQ(cli({"echo", "--echo.value", "3", "--help"}), 0);
  EXPECT_FALSE(g_seen.ran);
  for (const char* option : {"--echo.value", "--echo.flag", "--config", "--log.level",
                             "--log.all_ranks", "test job that records its options"}) {
    EXPECT_TRUE(contains(out_, option)) << option << "\n" << out_;
  }
  EXPECT_EQ(cli({"echo-model", "-h"}), 0);
  EXPECT_TRUE(contains(out_, "--model.hidden_dim")) << out_;
  EXPECT_TRUE(contains(out_, "tiny, small")) << out_;
  EXPECT_TRUE(contains(out_, "(preset: tiny=128 small=512")) << out_;
  EXPECT_TRUE(contains(out_, "(default: shc)")) << out_;
}

TEST_F(CliTest, ParsesCommandLineValues) {
  EXPECT_EQ(cli({"echo", "--echo.value", "7", "--echo.flag", "yes"}), 0) << err_;
  EXPECT_TRUE(g_seen.ran);
  EXPECT_EQ(g_seen.value, 7);
  EXPECT_TRUE(g_seen.flag);
  EXPECT_EQ(cli({"echo", "--echo.value=-3", "--echo.flag", "0"}), 0) << err_;
  EXPECT_EQ(g_seen.value, -3);
  EXPECT_FALSE(g_seen.flag);
}

TEST_F(CliTest, BoolOptionAloneMeansTrue) {
  EXPECT_EQ(cli({"echo", "--echo.flag"}), 0) << err_;
  EXPECT_TRUE(g_seen.flag);
  EXPECT_EQ(cli({"echo", "--echo.flag", "--echo.value", "4"}), 0) << err_;
  EXPECT_TRUE(g_seen.flag);
  EXPECT_EQ(g_seen.value, 4);
  EXPECT_EQ(cli({"echo", "--echo.flag=false"}), 0) << err_;
  EXPECT_FALSE(g_seen.flag);
}

TEST_F(CliTest, UnknownCommandLineOptionSuggestsTheClosest) {
  EXPECT_EQ(cli({"echo", "--echo.value_max", "3"}), 2);
  EXPECT_FALSE(g_seen.ran);
  EXPECT_TRUE(contains(err_,
                       "shc echo: unknown option 'echo.value_max' (did you mean "
                       "'echo.value'?)"))
      << err_;
  EXPECT_EQ(cli({"echo", "--echo.valeu=3"}), 2);
  EXPECT_TRUE(contains(err_, "unknown option 'echo.valeu' (did you mean 'echo.value'?)")) << err_;
  // No prefix guessing: an abbreviation is an unknown option, not silently echo.value.
  EXPECT_EQ(cli({"echo", "--echo.val", "3"}), 2);
  EXPECT_TRUE(contains(err_, "unknown option 'echo.val'")) << err_;
}

TEST_F(CliTest, StrayArgumentIsAUsageError) {
  EXPECT_EQ(cli({"echo", "stray"}), 2);
  EXPECT_TRUE(contains(err_, "unexpected argument 'stray'")) << err_;
}

TEST_F(CliTest, BareArgumentOfAJobThatTakesOne) {
  EXPECT_EQ(cli({"echo_path", "some/dir"}), 0);
  EXPECT_EQ(g_seen.path, "some/dir");
  EXPECT_EQ(cli({"echo_path", "--path", "other"}), 0);
  EXPECT_EQ(g_seen.path, "other");
  g_seen = {};
  EXPECT_EQ(cli({"echo_path", "a", "b"}), 2);
  EXPECT_FALSE(g_seen.ran);
  EXPECT_EQ(cli({"echo_path"}), 2);
  EXPECT_TRUE(contains(err_, "the option '--path' is required")) << err_;
}

TEST_F(CliTest, UnknownKeyInConfigFileNamesTheFile) {
  const auto file = write("bad.ini", "[echo]\nvalue = 1\nvalue_max = 3\n");
  EXPECT_EQ(cli({"echo", "--config", file}), 2);
  EXPECT_FALSE(g_seen.ran);
  EXPECT_TRUE(contains(err_, "shc echo: unknown option 'echo.value_max' in config file '" + file +
                                 "' (did you mean 'echo.value'?)"))
      << err_;
}

TEST_F(CliTest, ConfigFileCannotNameConfigFiles) {
  const auto file = write("nested.ini", "config = other.ini\n");
  EXPECT_EQ(cli({"echo", "--config", file}), 2);
  EXPECT_TRUE(contains(err_, "unknown option 'config'")) << err_;
}

TEST_F(CliTest, LaterConfigFileOverridesEarlier) {
  const auto a = write("a.ini", "# base\n[echo]\nvalue = 1\nflag = yes\n");
  const auto b = write("b.ini", "[echo]\nvalue = 2  # wins\n");
  EXPECT_EQ(cli({"echo", "--config", a, "--config=" + b}), 0) << err_;
  EXPECT_EQ(g_seen.value, 2);
  EXPECT_TRUE(g_seen.flag);
  EXPECT_EQ(cli({"echo", "--config", b, "--config", a}), 0) << err_;
  EXPECT_EQ(g_seen.value, 1);
}

TEST_F(CliTest, CommandLineOverridesEveryFile) {
  const auto a = write("a.ini", "[echo]\nvalue = 1\n");
  const auto b = write("b.ini", "[echo]\nvalue = 2\n");
  EXPECT_EQ(cli({"echo", "--echo.value", "5", "--config", a, "--config", b}), 0) << err_;
  EXPECT_EQ(g_seen.value, 5);
  EXPECT_EQ(cli({"echo", "--config", a, "--echo.flag", "false", "--config", b}), 0) << err_;
  EXPECT_EQ(g_seen.value, 2);
  EXPECT_FALSE(g_seen.flag);
}

TEST_F(CliTest, MissingConfigFileIsAUsageError) {
  const auto missing = (dir_ / "missing.ini").string();
  EXPECT_EQ(cli({"echo", "--config", missing}), 2);
  EXPECT_FALSE(g_seen.ran);
  EXPECT_TRUE(contains(err_, "cannot read config file '" + missing + "'")) << err_;
  EXPECT_EQ(cli({"echo", "--config", dir_.string()}), 2);
  EXPECT_TRUE(contains(err_, "is a directory")) << err_;
}

TEST_F(CliTest, BadValueNamesTheOption) {
  EXPECT_EQ(cli({"echo", "--echo.value", "abc"}), 2);
  EXPECT_FALSE(g_seen.ran);
  EXPECT_TRUE(contains(err_, "echo.value")) << err_;
  EXPECT_TRUE(contains(err_, "abc")) << err_;
  EXPECT_EQ(cli({"echo", "--echo.flag", "maybe"}), 2);
  EXPECT_TRUE(contains(err_, "echo.flag")) << err_;
  EXPECT_EQ(cli({"echo", "--echo.value"}), 2);
  EXPECT_TRUE(contains(err_, "echo.value")) << err_;

  const auto file = write("bad_value.ini", "[echo]\nvalue = abc\n");
  EXPECT_EQ(cli({"echo", "--config", file}), 2);
  EXPECT_TRUE(contains(err_, "echo.value")) << err_;
  EXPECT_TRUE(contains(err_, file)) << err_;
}

TEST_F(CliTest, BadLogLevelIsAUsageError) {
  EXPECT_EQ(cli({"echo", "--log.level", "loud"}), 2);
  EXPECT_TRUE(contains(err_, "invalid log level 'loud'")) << err_;
}

TEST_F(CliTest, ModelOptionsOverrideOnlyWhatIsGiven) {
  const auto file = write("model.ini", "[model]\npreset = small\ntie_embeddings = no\n");
  EXPECT_EQ(cli({"echo-model", "--config", file, "--model.residual", "mhc", "--model.n_streams",
                 "2", "--model.norm_eps", "1e-5"}),
            0)
      << err_;
  const shc::ModelConfig small = shc::get_config("small");
  EXPECT_EQ(g_seen.model.name, "small");
  EXPECT_EQ(g_seen.model.hidden_dim, small.hidden_dim);
  EXPECT_EQ(g_seen.model.n_layers, small.n_layers);
  EXPECT_EQ(g_seen.model.residual, shc::ResidualKind::kMHC);
  EXPECT_EQ(g_seen.model.n_streams, 2);
  EXPECT_DOUBLE_EQ(g_seen.model.norm_eps, 1e-5);
  EXPECT_FALSE(g_seen.model.tie_embeddings);
  EXPECT_EQ(g_seen.model.k_mixture, small.k_mixture);

  EXPECT_EQ(cli({"echo-model"}), 0) << err_;
  EXPECT_EQ(g_seen.model.name, "tiny");
  EXPECT_EQ(g_seen.model.hidden_dim, shc::get_config("tiny").hidden_dim);
}

TEST_F(CliTest, InvalidModelConfigIsAUsageError) {
  EXPECT_EQ(cli({"echo-model", "--model.hidden_dim", "100", "--model.n_heads", "3"}), 2);
  EXPECT_FALSE(g_seen.model.name == "tiny");
  EXPECT_TRUE(contains(err_,
                       "shc echo-model: invalid model config: hidden_dim (100) must be "
                       "divisible by n_heads (3)"))
      << err_;
  EXPECT_EQ(cli({"echo-model", "--model.preset", "huge"}), 2);
  EXPECT_TRUE(contains(err_, "unknown model preset 'huge'")) << err_;
  EXPECT_EQ(cli({"echo-model", "--model.residual", "dense"}), 2);
  EXPECT_TRUE(contains(err_, "unknown residual kind 'dense'")) << err_;
}

TEST_F(CliTest, ExitErrorPropagatesItsCode) {
  EXPECT_EQ(cli({"echo", "--echo.exit_code", "3"}), shc::jobs::kExitData);
  EXPECT_TRUE(contains(err_, "shc echo: echo was asked to fail")) << err_;
  EXPECT_EQ(cli({"echo", "--echo.exit_code", "75"}), shc::jobs::kExitPreempted);
}

TEST(ClosestMatch, SuggestsOnlyPlausibleTypos) {
  const std::vector<std::string> names = {"train.lr", "train.steps", "log.level"};
  EXPECT_EQ(shc::launch::closest_match("train.lr_max", names), "train.lr");
  EXPECT_EQ(shc::launch::closest_match("trian.steps", names), "train.steps");
  EXPECT_EQ(shc::launch::closest_match("lr", names), "train.lr");
  EXPECT_EQ(shc::launch::closest_match("model.preset", names), "");
  EXPECT_EQ(shc::launch::closest_match("trian", {"train", "evaluate"}), "train");
}

TEST(JobRegistry, RejectsDuplicatesAndListsSortedByName) {
  auto& registry = shc::jobs::JobRegistry::instance();
  EXPECT_THROW(registry.add({"echo", "again", [] { return std::make_unique<EchoJob>(); }}),
               std::logic_error);
  ASSERT_NE(registry.find("echo"), nullptr);
  EXPECT_EQ(registry.find("echo")->summary, "test job that records its options");
  EXPECT_EQ(registry.find("no-such-job"), nullptr);
  const auto jobs = registry.list();
  for (std::size_t i = 1; i < jobs.size(); ++i) EXPECT_LT(jobs[i - 1]->name, jobs[i]->name);
}

}  // namespace
