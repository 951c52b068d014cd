package org.herald.fhirtools;

import java.util.List;

/** The little JSON the result lines need: quoted strings and lists of messages. */
final class Json {
  private Json() {}

  static String quote(String text) {
    StringBuilder out = new StringBuilder("\"");
    for (int i = 0; i < text.length(); i++) {
      char c = text.charAt(i);
      switch (c) {
        case '"' -> out.append("\\\"");
        case '\\' -> out.append("\\\\");
        case '\n' -> out.append("\\n");
        case '\r' -> out.append("\\r");
        case '\t' -> out.append("\\t");
        default -> {
          if (c < 0x20) {
            out.append(String.format("\\u%04x", (int) c));
          } else {
            out.append(c);
          }
        }
      }
    }
    return out.append('"').toString();
  }

  static String messages(List<Checker.Message> messages) {
    StringBuilder out = new StringBuilder("[");
    for (Checker.Message m : messages) {
      if (out.length() > 1) {
        out.append(',');
      }
      out.append("{\"severity\":").append(quote(m.severity().getCode()));
      out.append(",\"location\":").append(quote(String.valueOf(m.location())));
      out.append(",\"id\":").append(quote(String.valueOf(m.id())));
      out.append(",\"message\":").append(quote(String.valueOf(m.text()))).append('}');
    }
    return out.append(']').toString();
  }
}
