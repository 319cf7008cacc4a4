// `shc prepare`: text files -> tokenizer -> HDF5 token shards with a train/validation split
// (SPEC §6). The work is data::prepare_dataset; this file maps options, progress and errors.
//   shc prepare --input a.txt b.txt --output data/kjv --tokenizer byte|spm:FILE|train-spm:VOCAB
//               [--shard_tokens N] [--val_fraction F] [--min_shard_tokens N] [--overwrite]
#include <boost/log/trivial.hpp>

#include <string>
#include <vector>

#include "data/prepare.h"
#include "jobs/job.h"

namespace shc::jobs {
namespace {

class PrepareJob : public Job {
 public:
  void add_options(po::options_description& options) const override {
    const data::PrepareOptions defaults;
    options.add_options()(
        "input",
        po::value<std::vector<std::string>>()->multitoken()->required()->value_name("FILE..."),
        "text files; each is one document, followed by the tokenizer's EOS")(
        "output", po::value<std::string>()->required()->value_name("DIR"),
        "writes DIR/train-00000.h5 ..., DIR/val-00000.h5 ... and, for SentencePiece, "
        "DIR/tokenizer.model")(
        "tokenizer",
        po::value<std::string>()->default_value(defaults.tokenizer)->value_name("SPEC"),
        "byte (ids 0-255 = bytes, 256 = EOS), spm:MODEL_FILE, or train-spm:VOCAB_SIZE to train "
        "a SentencePiece model on the input")(
        "shard_tokens", po::value<int64_t>()->default_value(defaults.shard_tokens)->value_name("N"),
        "target tokens per shard; each split is cut into equal shards of at most N tokens")(
        "val_fraction", po::value<double>()->default_value(defaults.val_fraction)->value_name("F"),
        "the last fraction F of the token stream is the validation split (at least "
        "min_shard_tokens tokens when F > 0); 0 = none")(
        "min_shard_tokens",
        po::value<int64_t>()->default_value(defaults.min_shard_tokens)->value_name("N"),
        "every shard holds at least N tokens: seq_len + 1 of the longest seq_len you will train "
        "or evaluate with")(
        "overwrite", po::value<bool>()->default_value(false, "false")->value_name("BOOL"),
        "replace the shards an existing output directory holds (refused otherwise)");
  }

  int run(const po::variables_map& vm) override {
    data::PrepareOptions o;
    o.inputs = vm["input"].as<std::vector<std::string>>();
    o.output_dir = vm["output"].as<std::string>();
    o.tokenizer = vm["tokenizer"].as<std::string>();
    o.shard_tokens = vm["shard_tokens"].as<int64_t>();
    o.val_fraction = vm["val_fraction"].as<double>();
    o.min_shard_tokens = vm["min_shard_tokens"].as<int64_t>();
    o.overwrite = vm["overwrite"].as<bool>();
    o.log = [](const std::string& line) { BOOST_LOG_TRIVIAL(info) << line; };
    const data::PrepareResult r = data::prepare_dataset(o);
    BOOST_LOG_TRIVIAL(info) << "tokenizer " << r.tokenizer_id << " (vocab_size " << r.vocab_size
                            << ", eos_id " << r.eos_id << "); train " << r.train_tokens
                            << " tokens, validation " << r.val_tokens << " tokens";
    return kExitOk;
  }
};

SHC_REGISTER_JOB(PrepareJob, "prepare", "text files -> tokenizer -> HDF5 token shards");

}  // namespace
}  // namespace shc::jobs
