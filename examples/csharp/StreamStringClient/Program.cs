// A client for npipes' framing="dotnet": the StreamString helper of Microsoft's
// named-pipe sample ("How to: Use Named Pipes for Network Interprocess
// Communication"): a 2-byte big-endian byte count, then the string in UTF-16LE.
//
//   dotnet run -- NAME MESSAGE...   sends each MESSAGE, prints each reply on a line
//
// The npipes side: npipes.listen(NAME, framing="dotnet") (see ../README.md).
using System;
using System.IO;
using System.IO.Pipes;
using System.Security.Principal;
using System.Text;

/// <summary>Microsoft's StreamString, with two fixes that keep the same bytes on the
/// wire: ReadString loops until it has the whole string (the sample trusts one Read),
/// and WriteString refuses a string over 65535 bytes (the sample cuts it silently,
/// sending a length that no longer matches the bytes that follow).</summary>
public class StreamString
{
    private readonly Stream ioStream;
    private readonly UnicodeEncoding streamEncoding = new(bigEndian: false, byteOrderMark: false, throwOnInvalidBytes: true);

    public StreamString(Stream ioStream) => this.ioStream = ioStream;

    public string ReadString()
    {
        int hi = ioStream.ReadByte(), lo = ioStream.ReadByte();
        if (hi < 0) throw new EndOfStreamException("the peer closed the connection");
        if (lo < 0) throw new EndOfStreamException("the stream ended inside a length");
        int len = hi * 256 + lo;
        byte[] inBuffer = new byte[len];
        for (int got = 0; got < len;)
        {
            int n = ioStream.Read(inBuffer, got, len - got);
            if (n == 0) throw new EndOfStreamException("the stream ended inside a string");
            got += n;
        }
        return streamEncoding.GetString(inBuffer);
    }

    public int WriteString(string outString)
    {
        byte[] outBuffer = streamEncoding.GetBytes(outString);
        int len = outBuffer.Length;
        if (len > UInt16.MaxValue)
            throw new ArgumentException($"{len} bytes of UTF-16: at most {UInt16.MaxValue} fit a message");
        ioStream.WriteByte((byte)(len / 256));
        ioStream.WriteByte((byte)(len & 255));
        ioStream.Write(outBuffer, 0, len);
        ioStream.Flush();
        return outBuffer.Length + 2;
    }
}

static class Program
{
    static int Main(string[] args)
    {
        if (args.Length < 2)
        {
            Console.Error.WriteLine("usage: StreamStringClient NAME MESSAGE...");
            return 2;
        }
        string name = args[0].StartsWith(@"\\.\pipe\", StringComparison.OrdinalIgnoreCase) ? args[0][9..] : args[0];
        try
        {
            var level = OperatingSystem.IsWindows() ? TokenImpersonationLevel.Identification : TokenImpersonationLevel.None;
            using var pipe = new NamedPipeClientStream(".", name, PipeDirection.InOut, PipeOptions.None, level);
            pipe.Connect(5000);
            var ss = new StreamString(pipe);
            using var stdout = Console.OpenStandardOutput();
            foreach (string message in args[1..])
            {
                ss.WriteString(message);
                byte[] line = Encoding.UTF8.GetBytes(ss.ReadString() + "\n");
                stdout.Write(line, 0, line.Length);
            }
            return 0;
        }
        catch (Exception e) when (e is IOException or TimeoutException or ArgumentException)
        {
            Console.Error.WriteLine($"StreamStringClient: {e.Message}");
            return 1;
        }
    }
}
