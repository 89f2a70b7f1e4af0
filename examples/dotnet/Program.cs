// Read Key Vault secrets through kvproxy with HttpClient (.NET 8).
//
//   KVPROXY_URL=http://127.0.0.1:8380 dotnet run
using System.Net;
using System.Net.Http.Json;
using System.Text.Json;

var baseUrl = Environment.GetEnvironmentVariable("KVPROXY_URL") ?? "http://127.0.0.1:8380";
using var http = new HttpClient { Timeout = TimeSpan.FromSeconds(30) };
http.DefaultRequestHeaders.Add("Metadata", "true"); // kvproxy refuses requests without it

async Task<JsonElement> Get(string url)
{
    using var resp = await http.GetAsync(url);
    var body = await resp.Content.ReadAsStringAsync();
    if (!resp.IsSuccessStatusCode)
    {
        string? diagnosis = resp.Headers.TryGetValues("X-Kvproxy-Diagnosis", out var v) ? v.First() : null;
        string detail = body;
        try
        {
            var doc = JsonDocument.Parse(body).RootElement;
            if (doc.TryGetProperty("kvproxy", out var kv))
            {
                diagnosis ??= kv.GetProperty("diagnosis").GetString();
                detail = kv.GetProperty("detail").GetString() ?? body;
            }
            else if (doc.TryGetProperty("error", out var err))
            {
                detail = err.GetProperty("message").GetString() ?? body;
            }
        }
        catch (JsonException) { }
        throw new KvproxyException(resp.StatusCode, diagnosis ?? "-", detail);
    }
    return JsonDocument.Parse(body).RootElement;
}

Console.WriteLine($"db-password: {(await Get($"{baseUrl}/secrets/db-password")).GetProperty("value").GetString()}");

// Follow nextLink (kvproxy points it back at itself) until the last page.
var names = new List<string>();
var pages = 0;
for (string? url = $"{baseUrl}/secrets?maxresults=1"; url is not null;)
{
    var page = await Get(url);
    pages++;
    // An item's id is the vault's own URL: use its path with kvproxy.
    var pageNames = page.GetProperty("value").EnumerateArray()
        .Select(i => new Uri(i.GetProperty("id").GetString()!).Segments.Last()).ToList();
    Console.WriteLine($"page {pages}: {string.Join(", ", pageNames)}");
    names.AddRange(pageNames);
    url = page.TryGetProperty("nextLink", out var next) && next.ValueKind == JsonValueKind.String ? next.GetString() : null;
}
Console.WriteLine($"listed {names.Count} secrets in {pages} pages");

try
{
    await Get($"{baseUrl}/secrets/forbidden-rbac");
    Console.Error.WriteLine("forbidden-rbac: expected a 403");
    return 1;
}
catch (KvproxyException e)
{
    Console.WriteLine($"forbidden-rbac: {(int)e.Status} {e.Diagnosis}: {e.Detail}");
}
return 0;

/// <summary>A refusal by the vault or kvproxy, with kvproxy's diagnosis.</summary>
class KvproxyException(HttpStatusCode status, string diagnosis, string detail)
    : Exception($"{(int)status} {diagnosis}: {detail}")
{
    public HttpStatusCode Status { get; } = status;
    public string Diagnosis { get; } = diagnosis;
    public string Detail { get; } = detail;
}
