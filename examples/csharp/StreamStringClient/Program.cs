// A client for npipes' framing="dotnet": the StreamString helper of Microsoft's
// named-pipe sample (../Shared/Npipes.cs): a 2-byte big-endian byte count, then the
// string in UTF-16LE.
//
//   StreamStringClient NAME MESSAGE...   sends each MESSAGE, prints each reply on a line
//
// NAME: the .NET pipe name ("demo"; \\.\pipe\demo on Windows). On Linux/macOS .NET
// makes it the socket $TMPDIR/CoreFxPipe_demo: the npipes side uses dotnet=True.
using System;
using System.IO;

static class Program
{
    static int Main(string[] args)
    {
        if (args.Length < 2)
        {
            Console.Error.WriteLine("usage: StreamStringClient NAME MESSAGE...");
            return 2;
        }
        try
        {
            using (var pipe = Pipes.Connect(args[0], 30000))
            using (var stdout = Console.OpenStandardOutput())
            {
                var ss = new StreamString(pipe);
                for (int i = 1; i < args.Length; i++)
                {
                    ss.WriteString(args[i]);
                    string reply = ss.ReadString();
                    if (reply == null) throw new EndOfStreamException("the peer closed the connection");
                    Pipes.PrintLine(stdout, reply);
                }
                return 0;
            }
        }
        catch (Exception e) when (e is IOException || e is TimeoutException || e is UnauthorizedAccessException
            || e is ArgumentException)
        {
            Console.Error.WriteLine("StreamStringClient: " + e.Message);
            return 1;
        }
    }
}
