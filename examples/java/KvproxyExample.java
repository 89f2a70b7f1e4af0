// Read Key Vault secrets through kvproxy with java.net.http (Java 17).
//
//   KVPROXY_URL=http://127.0.0.1:8380 java KvproxyExample.java
//
// The JSON handling below uses regular expressions only to stay free of
// dependencies; use your JSON library (Jackson, Gson) in real code.
import java.io.IOException;
import java.net.URI;
import java.net.URLEncoder;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Optional;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

public class KvproxyExample {
    /** A refusal by the vault or kvproxy, with kvproxy's diagnosis. */
    static class KvproxyException extends IOException {
        final int status;
        final String diagnosis;
        final String detail;

        KvproxyException(int status, String diagnosis, String detail) {
            super(status + " " + diagnosis + ": " + detail);
            this.status = status;
            this.diagnosis = diagnosis;
            this.detail = detail;
        }
    }

    static final String BASE = Optional.ofNullable(System.getenv("KVPROXY_URL")).orElse("http://127.0.0.1:8380");

    // The default client offers "Upgrade: h2c" on plain http, which kvproxy
    // (like most proxies) does not speak: ask for HTTP/1.1.
    static final HttpClient HTTP = HttpClient.newBuilder()
            .version(HttpClient.Version.HTTP_1_1)
            .connectTimeout(Duration.ofSeconds(10))
            .build();

    static String get(String url) throws IOException, InterruptedException {
        HttpRequest req = HttpRequest.newBuilder(URI.create(url))
                .header("Metadata", "true") // kvproxy refuses requests without it
                .timeout(Duration.ofSeconds(30))
                .GET().build();
        HttpResponse<String> resp = HTTP.send(req, HttpResponse.BodyHandlers.ofString());
        if (resp.statusCode() / 100 != 2) {
            String body = resp.body();
            String diagnosis = resp.headers().firstValue("X-Kvproxy-Diagnosis")
                    .orElse(field(member(body, "kvproxy"), "diagnosis").orElse("-"));
            String detail = field(member(body, "kvproxy"), "detail").or(() -> field(body, "message")).orElse(body);
            throw new KvproxyException(resp.statusCode(), diagnosis, detail);
        }
        return resp.body();
    }

    static String readSecret(String name) throws IOException, InterruptedException {
        String body = get(BASE + "/secrets/" + URLEncoder.encode(name, StandardCharsets.UTF_8));
        return field(body, "value").orElseThrow();
    }

    /** Follows nextLink (kvproxy points it back at itself) until the last page. */
    static int pages;

    static List<String> listSecretNames(int pageSize) throws IOException, InterruptedException {
        List<String> names = new ArrayList<>();
        String url = BASE + "/secrets?maxresults=" + pageSize;
        for (int page = 1; url != null; page++) {
            String body = get(url);
            List<String> pageNames = new ArrayList<>();
            Matcher m = Pattern.compile("\"id\"\\s*:\\s*\"([^\"]+)\"").matcher(body);
            while (m.find()) {
                // An item's id is the vault's own URL: use its path with kvproxy.
                String path = URI.create(m.group(1)).getPath();
                pageNames.add(path.substring(path.lastIndexOf('/') + 1));
            }
            System.out.println("page " + page + ": " + String.join(", ", pageNames));
            pages = page;
            names.addAll(pageNames);
            url = field(body, "nextLink").orElse(null);
        }
        return names;
    }

    static Optional<String> field(String json, String name) {
        Matcher m = Pattern.compile("\"" + name + "\"\\s*:\\s*\"((?:[^\"\\\\]|\\\\.)*)\"").matcher(json);
        return m.find() ? Optional.of(m.group(1).replace("\\\"", "\"").replace("\\/", "/")) : Optional.empty();
    }

    static String member(String json, String name) {
        int i = json.indexOf("\"" + name + "\"");
        return i < 0 ? "" : json.substring(i);
    }

    public static void main(String[] args) throws Exception {
        System.out.println("db-password: " + readSecret("db-password"));
        List<String> names = listSecretNames(1);
        System.out.println("listed " + names.size() + " secrets in " + pages + " pages");
        try {
            readSecret("forbidden-rbac");
            System.err.println("forbidden-rbac: expected a 403");
            System.exit(1);
        } catch (KvproxyException e) {
            System.out.println("forbidden-rbac: " + e.status + " " + e.diagnosis + ": " + e.detail);
        }
    }
}
