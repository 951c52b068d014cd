package org.herald.fhirtools;

import ca.uhn.fhir.context.FhirContext;
import ca.uhn.fhir.context.support.DefaultProfileValidationSupport;
import ca.uhn.fhir.parser.DataFormatException;
import ca.uhn.fhir.parser.IParser;
import ca.uhn.fhir.parser.StrictErrorHandler;
import ca.uhn.fhir.validation.FhirValidator;
import ca.uhn.fhir.validation.ResultSeverityEnum;
import ca.uhn.fhir.validation.SingleValidationMessage;
import ca.uhn.fhir.validation.ValidationResult;
import java.util.ArrayList;
import java.util.List;
import org.hl7.fhir.common.hapi.validation.support.CommonCodeSystemsTerminologyService;
import org.hl7.fhir.common.hapi.validation.support.InMemoryTerminologyServerValidationSupport;
import org.hl7.fhir.common.hapi.validation.support.SnapshotGeneratingValidationSupport;
import org.hl7.fhir.common.hapi.validation.support.ValidationSupportChain;
import org.hl7.fhir.common.hapi.validation.validator.FhirInstanceValidator;

/**
 * The instance validator and the strict JSON parser of one FHIR version, offline: the core
 * definitions come from HAPI's validation-resources jar, codes are checked in memory (no
 * terminology server), and a profile the validator does not know is a warning.
 */
final class Checker {
  /** One message of the validator, as the result line reports it. */
  record Message(ResultSeverityEnum severity, String location, String id, String text) {
    boolean isError() {
      return severity == ResultSeverityEnum.ERROR || severity == ResultSeverityEnum.FATAL;
    }

    boolean isWarning() {
      return severity == ResultSeverityEnum.WARNING;
    }
  }

  private final FhirValidator validator;
  private final IParser strictParser;

  private Checker(FhirContext context) {
    ValidationSupportChain chain =
        new ValidationSupportChain(
            new DefaultProfileValidationSupport(context),
            new CommonCodeSystemsTerminologyService(context),
            new InMemoryTerminologyServerValidationSupport(context),
            new SnapshotGeneratingValidationSupport(context));
    FhirInstanceValidator module = new FhirInstanceValidator(chain);
    module.setErrorForUnknownProfiles(false);
    module.setNoTerminologyChecks(false);
    validator = context.newValidator().registerValidatorModule(module);
    strictParser = context.newJsonParser().setParserErrorHandler(new StrictErrorHandler());
  }

  /** The checker of {@code version}: "4.0" (R4) or "4.3" (R4B). */
  static Checker forVersion(String version) {
    switch (version) {
      case "4.0":
        return new Checker(FhirContext.forR4());
      case "4.3":
        return new Checker(FhirContext.forR4B());
      default:
        throw new IllegalArgumentException("unknown FHIR version " + version + " (4.0 or 4.3)");
    }
  }

  List<Message> validate(String json) {
    ValidationResult result = validator.validateWithResult(json);
    List<Message> messages = new ArrayList<>();
    for (SingleValidationMessage m : result.getMessages()) {
      messages.add(
          new Message(m.getSeverity(), m.getLocationString(), m.getMessageId(), m.getMessage()));
    }
    return messages;
  }

  /** Null when the strict parser reads {@code json}, else what it refused. */
  String parseStrictly(String json) {
    try {
      strictParser.parseResource(json);
      return null;
    } catch (DataFormatException | IllegalArgumentException e) {
      return e.getMessage();
    }
  }
}
