package org.herald.fhirtools;

import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;

/**
 * Checks many FHIR JSON files in one JVM run: the test suite's independent view of Herald's
 * outputs (tests/support/fhir_tools.py drives it).
 *
 * <p>Reads lines {@code <version> <path>} on standard input ({@code version} is {@code 4.0}
 * for R4 or {@code 4.3} for R4B), and for each writes one JSON line on standard output:
 * {@code {"path": ..., "version": ..., "errors": [...], "warnings": [...], "parse": ...}}, where
 * errors and warnings are the instance validator's messages (error and fatal are errors) and
 * {@code parse} is null when the strict parser read the file, else why it refused it. The
 * validator and parser of a version are made once, on the first file of that version.
 */
public final class Check {
  private Check() {}

  public static void main(String[] args) throws Exception {
    PrintStream out = new PrintStream(System.out, true, StandardCharsets.UTF_8);
    Map<String, Checker> checkers = new HashMap<>();
    BufferedReader in =
        new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));
    String line;
    while ((line = in.readLine()) != null) {
      line = line.strip();
      if (line.isEmpty()) {
        continue;
      }
      int space = line.indexOf(' ');
      if (space < 0) {
        throw new IllegalArgumentException("expected '<version> <path>', got: " + line);
      }
      String version = line.substring(0, space);
      String path = line.substring(space + 1);
      Checker checker = checkers.computeIfAbsent(version, Checker::forVersion);
      String json = Files.readString(Path.of(path), StandardCharsets.UTF_8);
      out.println(result(path, version, checker, json));
    }
  }

  private static String result(String path, String version, Checker checker, String json) {
    List<Checker.Message> errors = new ArrayList<>();
    List<Checker.Message> warnings = new ArrayList<>();
    for (Checker.Message message : checker.validate(json)) {
      if (message.isError()) {
        errors.add(message);
      } else if (message.isWarning()) {
        warnings.add(message);
      }
    }
    String parse = checker.parseStrictly(json);
    StringBuilder line = new StringBuilder("{");
    line.append("\"path\":").append(Json.quote(path));
    line.append(",\"version\":").append(Json.quote(version));
    line.append(",\"errors\":").append(Json.messages(errors));
    line.append(",\"warnings\":").append(Json.messages(warnings));
    line.append(",\"parse\":").append(parse == null ? "null" : Json.quote(parse));
    return line.append('}').toString();
  }
}
