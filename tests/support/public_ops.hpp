#pragma once
// The public ops as the headers declare them, for the op checklist in tests/ops/test_reference.cpp: reading
// them from ops/*.hpp (rather than listing them in the test) is what makes a new op without a PyTorch
// fixture case fail the suite.
#include <cctype>
#include <filesystem>
#include <fstream>
#include <map>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <vector>

namespace test_support {

namespace detail {
// `source` without comments, string and character literals (emptied) and preprocessor lines, so that
// braces, parentheses and semicolons in them cannot confuse the scan.
inline std::string code_only(const std::string& source) {
  std::string out;
  bool line_start = true;
  for (std::size_t i = 0; i < source.size(); ++i) {
    const char c = source[i];
    const char next = i + 1 < source.size() ? source[i + 1] : '\0';
    if (line_start && c == '#') {  // a directive, with its backslash continuations
      while (i < source.size() && !(source[i] == '\n' && source[i - 1] != '\\')) ++i;
      out += '\n';
      continue;
    }
    if (c == '/' && next == '/') {
      while (i < source.size() && source[i] != '\n') ++i;
      out += '\n';
      line_start = true;
      continue;
    }
    if (c == '/' && next == '*') {
      const std::size_t end = source.find("*/", i + 2);
      i = end == std::string::npos ? source.size() : end + 1;
      out += ' ';
      continue;
    }
    const bool after_identifier =
        !out.empty() && (std::isalnum(static_cast<unsigned char>(out.back())) || out.back() == '_');
    if (c == '"' || (c == '\'' && !after_identifier)) {  // not a digit separator (1'000)
      out += c;
      for (++i; i < source.size() && source[i] != c; ++i)
        if (source[i] == '\\') ++i;
      out += c;
      continue;
    }
    out += c;
    if (c == '\n')
      line_start = true;
    else if (!std::isspace(static_cast<unsigned char>(c)))
      line_start = false;
  }
  return out;
}

// The function a declaration at namespace scope declares, or "" (a type, a variable, an operator, a using).
inline std::string declared_function(const std::string& decl) {
  static const std::regex skip(R"(^\s*(using|typedef|friend|static_assert|enum|class|struct|union)\b|\boperator\b)");
  static const std::regex name(R"(([A-Za-z_]\w*)\s*$)");
  const std::size_t paren = decl.find('(');
  if (paren == std::string::npos || std::regex_search(decl, skip)) return "";
  const std::string head = decl.substr(0, paren);
  if (head.find('=') != std::string::npos) return "";  // a variable initialised by a call
  std::smatch m;
  if (!std::regex_search(head, m, name) || m[1] == "decltype") return "";
  return m[1];
}
}  // namespace detail

/// Names of the free functions declared directly in namespace `unroll` in header text `source`: not in a
/// nested namespace (unroll::detail), a class, or a function body, and no operators (they wrap named ops).
/// A scanner, not a C++ parser: it tracks braces outside parentheses (so `= {}` default arguments are
/// harmless) and reads each declaration ending in ';' or a body's '{'.
inline std::set<std::string> public_functions(const std::string& source) {
  static const std::regex namespace_head(R"(^\s*(?:inline\s+)?namespace\s*([\w:]*)\s*$)");
  const std::string code = detail::code_only(source);
  std::vector<std::string> scopes;  // one entry per open brace: the namespace's name, or "" for any other body
  std::set<std::string> found;
  std::string decl;
  int parens = 0;
  auto at_unroll_scope = [&] { return scopes.size() == 1 && scopes[0] == "unroll"; };
  auto take = [&] {
    if (at_unroll_scope())
      if (std::string f = detail::declared_function(decl); !f.empty()) found.insert(f);
    decl.clear();
  };
  for (const char c : code) {
    if (parens > 0 || c == '(') {
      parens += c == '(' ? 1 : c == ')' ? -1 : 0;
      decl += c;
    } else if (c == '{') {
      std::smatch m;
      const bool is_namespace = std::regex_search(decl, m, namespace_head);
      const std::string name = is_namespace ? m[1].str() : "";
      take();  // a function with its body here (`inline Tensor f(...) {`) is declared too
      scopes.push_back(is_namespace ? name : "");
    } else if (c == '}') {
      if (!scopes.empty()) scopes.pop_back();
      decl.clear();
    } else if (c == ';') {
      take();
    } else {
      decl += c;
    }
  }
  return found;
}

/// public_functions of every .hpp file in `dir`, each with the file that declares it (for messages).
inline std::map<std::string, std::string> public_functions_in(const std::filesystem::path& dir) {
  std::map<std::string, std::string> all;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    if (entry.path().extension() != ".hpp") continue;
    std::ifstream in(entry.path());
    std::stringstream text;
    text << in.rdbuf();
    for (const std::string& f : public_functions(text.str())) all.emplace(f, entry.path().filename().string());
  }
  return all;
}

}  // namespace test_support
